"""Shell completion for ``python -m dit_engine`` and ``dit-engine`` (bash; zsh through bashcompinit).

Hydra's own bash script registers a completion for ``python <file>.py`` or for an installed
command, and asks the program with ``-sc query=bash`` and the typed line in ``COMP_LINE``. For
``python -m dit_engine`` neither half works: the script looks for a file named ``-m``, and the query
parses ``-m dit_engine`` as the multirun flag and an override. So ``-sc install=bash`` prints the
script below instead, registered for ``python``, ``python3`` (and the running interpreter's name)
and ``dit-engine``, and a query's line is rewritten to ``dit-engine <overrides>`` before Hydra
answers it, so completion itself (groups, options, keys) is still Hydra's::

    eval "$(python -m dit_engine -sc install=bash)"     # or: eval "$(dit-engine -sc install=bash)"
    python -m dit_engine cache=<TAB>                     # cache=dbcache cache=fbcache ...
    eval "$(python -m dit_engine -sc uninstall=bash)"   # remove it again

A line that is not a dit_engine command (``python other.py <TAB>``) gets no suggestions from the
function, so bash falls back to file names (``complete -o default``).
"""

from __future__ import annotations

import os
import re
import sys

#: Shells served by the script below (zsh runs bash scripts after ``bashcompinit``).
SHELLS = ("bash", "zsh")
FUNCTION = "_dit_engine_complete"

#: ``<python> [-X opt ...] -m dit_engine`` or ``[path/]dit-engine`` at the start of a line.
_COMMAND = re.compile(r"^\s*(?:\S*python[\d.]*(?:\s+-\S+)*?\s+-m\s+dit_engine|\S*dit-engine)(?=\s|$)")

_SCRIPT = r"""
{function}()
{{
    local line="${{COMP_LINE:0:${{COMP_POINT:-${{#COMP_LINE}}}}}}"
    local -a helper
    local words
    read -r -a words <<< "$line"
    if [[ "$line" =~ ^[[:space:]]*[^[:space:]]*dit-engine[[:space:]] ]]; then
        helper=("${{words[0]}}")
    elif [[ "$line" =~ ^[[:space:]]*[^[:space:]]+[[:space:]]+-m[[:space:]]+dit_engine[[:space:]] ]]; then
        helper=("${{words[0]}}" -m dit_engine)
    else
        return 0  # not a dit_engine command: bash falls back to file names
    fi
    local cur="${{line##*[[:space:]]}}"
    local choices
    choices=$(COMP_LINE="$line" COMP_POINT=${{#line}} "${{helper[@]}}" -sc query=bash 2>/dev/null)
    COMPREPLY=($(compgen -W "$choices" -- "$cur"))
    # bash replaces only the part of the word after its last '=' when '=' breaks words
    if [[ "$COMP_WORDBREAKS" == *=* && "$cur" == *=* ]]; then
        local prefix="${{cur%=*}}="
        COMPREPLY=("${{COMPREPLY[@]#"$prefix"}}")
    fi
    if [[ ${{#COMPREPLY[@]}} -eq 1 && "${{COMPREPLY[0]}}" == *[=/] ]]; then
        compopt -o nospace 2>/dev/null  # a group name: keep typing its option
    fi
    return 0
}}
complete -o default -F {function} {commands}
"""


def commands() -> list[str]:
    """The command names the completion is registered for."""
    names = ["python", "python3"]
    running = os.path.basename(sys.executable or "")
    if re.fullmatch(r"python[\d.]*", running) and running not in names:
        names.append(running)
    return names + ["dit-engine"]


def install_script() -> str:
    """The bash (and zsh with bashcompinit) script that ``-sc install=bash`` prints."""
    return _SCRIPT.format(function=FUNCTION, commands=" ".join(commands())).lstrip()


def uninstall_script() -> str:
    """Undo :func:`install_script`."""
    return f"complete -r {' '.join(commands())} 2>/dev/null\nunset -f {FUNCTION}\n"


def normalise_line(line: str, point: int | None = None) -> str:
    """A completion query's line up to the cursor, with ``python -m dit_engine`` (or a path to
    ``dit-engine``) spelled ``dit-engine``, the form Hydra's query parser expects."""
    line = line if point is None else line[:point]
    match = _COMMAND.match(line)
    return f"dit-engine{line[match.end():]}" if match else line


def _shell_completion_arg(args: list[str]) -> str | None:
    for index, arg in enumerate(args):
        if arg in ("-sc", "--shell-completion") and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--shell-completion="):
            return arg.partition("=")[2]
    return None


def handle(args: list[str]) -> None:
    """Serve ``-sc install=bash`` / ``uninstall=bash`` (print the script, exit 0) and prepare
    ``-sc query=bash`` (normalise ``COMP_LINE``; Hydra answers it). Anything else is left to Hydra."""
    value = _shell_completion_arg(args)
    if value is None:
        return
    command, _, shell = value.partition("=")
    if shell not in SHELLS:
        return  # fish and the like: Hydra's own plugins
    if command == "install":
        print(install_script(), end="")
        sys.exit(0)
    if command == "uninstall":
        print(uninstall_script(), end="")
        sys.exit(0)
    if command == "query" and "COMP_LINE" in os.environ:
        point = os.environ.get("COMP_POINT", "")
        line = normalise_line(os.environ["COMP_LINE"], int(point) if point.isdigit() else None)
        os.environ["COMP_LINE"] = line
        os.environ["COMP_POINT"] = str(len(line))
