#!/usr/bin/env bash
# The wheel as a user gets it: build dit_engine's wheel (and the example plugin's) from the files the
# repo ships, install them into a fresh venv that cannot see the editable install, and run every
# `python -m` entry point and console script from a folder outside the repo.
#
# Isolation: the venv is made without --system-site-packages, which would run the outer
# site-packages' __editable__*.pth finders and quietly serve any module the wheel lacks from the
# repo. Instead a .pth file lists the outer site-packages folders as plain path entries, so
# torch, diffusers and the rest are reused (nothing is downloaded) but their .pth files, the
# editable finders among them, are not run. The wheels install into the venv's own site-packages,
# which comes first on sys.path; every package and data file is then checked to load from there.
#
# Needs only what the README's quick start installs (pip builds the wheels). About a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
py=${PYTHON:-python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
step() { echo "wheel smoke: [$((SECONDS - start))s] $*"; }

# 1. The shipped files only (tracked and new, not ignored: no build/, no outputs/), then the wheels.
mkdir -p "$tmp/src" "$tmp/wheels" "$tmp/work"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard \
        | (cd "$repo" && xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' _) \
        | tar --null -T - -cf - | tar -xf - -C "$tmp/src"
else
    cp -r . "$tmp/src"
fi
step "building wheels"
"$py" -m pip wheel --quiet --no-deps -w "$tmp/wheels" "$tmp/src" "$tmp/src/examples/plugin"

# 2. A fresh venv that reuses the outer packages as plain path entries (see above).
step "installing into a fresh venv"
"$py" -m venv --without-pip "$tmp/venv"  # pip from outside installs into it (--python: pip >= 22.3)
vpy=$tmp/venv/bin/python
vsite=$("$vpy" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
"$py" -c 'import sys; print("\n".join(p for p in sys.path if p.endswith(("site-packages", "dist-packages"))))' \
    > "$vsite/_outer_site_packages.pth"
"$py" -m pip --python "$vpy" install --quiet --no-deps --no-index "$tmp"/wheels/*.whl

cd "$tmp/work"
export HF_HUB_OFFLINE=1

# 3. Every package and data file of the repo loads from the venv, never from the repo.
step "checking packages and data files"
"$vpy" - "$repo" "$vsite" <<'PY'
import importlib.metadata as md
import importlib.util
import sys
from pathlib import Path

repo, site = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
# folder in the repo -> import name (pyproject.toml's package-dir)
roots = {"dit_engine": "dit_engine", "conf": "dit_engine.conf", "adapters": "dit_engine_adapters"}
problems, packages, files = [], 0, 0
for folder, name in roots.items():
    for init in sorted((repo / folder).rglob("__init__.py")):
        rel = init.parent.relative_to(repo / folder)
        package = ".".join([name, *rel.parts])
        spec = importlib.util.find_spec(package)
        origin = Path(spec.origin).resolve() if spec and spec.origin else None
        if origin is None or site not in origin.parents:
            problems.append(f"package {package} loads from {origin}, not the wheel")
        packages += 1
    for path in sorted((repo / folder).rglob("*")):
        # every file the code may open (.md files are notes for the reader of the repo)
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".md"):
            installed = site.joinpath(*name.split("."), path.relative_to(repo / folder))
            files += 1
            if not installed.is_file():
                problems.append(f"{path.relative_to(repo)} is not in the wheel ({installed} missing)")
for dist_name in ("dit_engine", "dit_engine_example"):
    dist = md.distribution(dist_name)
    if Path(dist.locate_file("")).resolve() != site:
        problems.append(f"{dist_name}'s metadata comes from {dist.locate_file('')}, not the venv")
    for ep in dist.entry_points:
        spec = importlib.util.find_spec(ep.module)
        if spec is None or site not in Path(spec.origin).resolve().parents:
            problems.append(f"entry point {ep.group}:{ep.name} -> {ep.module} not in the wheel")
import dit_engine

print(f"{packages} packages, {files} files, dit_engine from {Path(dit_engine.__file__).parent}")
if problems:
    sys.exit("wheel smoke: " + "\n  ".join(["incomplete wheel:", *problems]))
PY

# 4. Every entry point, from the venv, in a folder outside the repo.
expect() {  # expect TEXT COMMAND...: run, fail on a non-zero exit or when TEXT is not in the output
    local text=$1 out
    shift
    step "$(basename "$1") ${*:2}"
    if ! out=$("$@" 2>&1); then
        printf '%s\n' "$out" | tail -30 >&2
        echo "wheel smoke: FAILED: $*" >&2
        exit 1
    fi
    if ! grep -qF -- "$text" <<<"$out"; then
        printf '%s\n' "$out" | tail -30 >&2
        echo "wheel smoke: FAILED: '$text' not in the output of: $*" >&2
        exit 1
    fi
}
vbin=$tmp/venv/bin
expect "== Configuration groups ==" "$vpy" -m dit_engine --help
expect "done: " "$vpy" -m dit_engine workload=smoke quiet=true hydra.run.dir=run
test -s run/metrics.json && ls run/images/*.png >/dev/null
expect "every_nth" "$vbin/dit-engine" --help  # the example plugin's option, from its wheel
expect "DBCache F1B0 over 12 blocks" "$vbin/dit-engine" cache=fbcache dry_run=true hydra.run.dir=dry
expect "python -m dit_engine.serve" "$vpy" -m dit_engine.serve --help
expect "DBCache" "$vpy" -m dit_engine.serve cache=dbcache dry_run=true
expect "usage:" "$vpy" -m dit_engine.metrics --help
expect "inf" "$vpy" -m dit_engine.metrics run/images run/images
expect "usage:" "$vpy" -m dit_engine.report --help
expect "usage:" "$vpy" -m dit_engine.digits.train --help
step "ok: the wheel installs and every entry point runs"
