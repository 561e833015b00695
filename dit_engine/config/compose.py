"""Compose a run config from override strings, the same way the CLI does.

``compose_config(["cache=dbcache", "cache.threshold=0.1"])`` returns the resolved config or raises
:class:`~dit_engine.errors.ConfigError` with a one-line message that names the fix (the option or
key that exists, the type expected).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence

from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException

from dit_engine.compat import hydra_app_set_aside
from dit_engine.config.groups import engine_config_class, group_names
from dit_engine.config.options import CONFIG_MODULE, group_options
from dit_engine.config.schema import NoneConfig
from dit_engine.config.schema_source import group_schemas, schema_choice_problem
from dit_engine.config.search_path import register_schemas
from dit_engine.errors import ConfigError


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides; raise ConfigError on bad input.

    Works whether or not a Hydra app is already running in this process: an initialised global
    Hydra is set aside and restored afterwards. Compositions are memoised per process (Hydra takes
    about 0.3 s per compose; ``apply()`` in a loop would pay it every time): each call returns its
    own deep copy, so callers may change it freely.
    """
    key = tuple(expand_aliases(overrides))
    if key not in _COMPOSED:
        if len(_COMPOSED) >= _COMPOSED_MAX:
            _COMPOSED.pop(next(iter(_COMPOSED)))
        _COMPOSED[key] = _compose(list(key))
    return copy.deepcopy(_COMPOSED[key])


#: shorthand overrides: ``lora=<path>`` sets ``lora.path`` (``lora`` is a node of keys, not a group);
#: ``cache.calibration_file`` is the old name of ``cache.signals_file``, kept as issues 3-5 spelled it out
ALIASES = {"lora": "lora.path", "cache.calibration_file": "cache.signals_file"}


#: Options issues named that are a setting of another option (a number to sweep is a key, not a
#: file): each is spelled out as that option with the setting.
OPTION_ALIASES = {
    "+method=step_adaptive_foca_018": ["+method=step_adaptive_foca", "cache.budget=0.18"],
    "+method=step_foca_018": ["+method=step_foca_ultra", "cache.budget=0.18"],
    "+method=step_forecast_011": ["+method=step_forecast_ultra", "cache.budget=0.11"],
    # the frontier points of docs/caches.md (issue 26 names them)
    "+method=step_spectrum_018": ["+method=step_spectrum_ultra", "cache.budget=0.18"],
    "+method=step_spectrum_011": ["+method=step_spectrum_ultra", "cache.budget=0.11"],
}


def expand_aliases(overrides: Sequence[str]) -> list[str]:
    """Overrides with each shorthand spelled out:

    * ``lora=x.safetensors`` -> ``lora.path=x.safetensors`` (``lora=null`` / ``lora=none``: no LoRA);
    * ``cache.calibration_file=...`` -> ``cache.signals_file=...`` (its old name);
    * ``attention=<diffusers backend>`` -> ``attention=native attention.backend=<backend>`` for a
      backend with no preset of its own (``attention=flex``, ``attention=_native_cudnn``);
    * the budget-named methods of :data:`OPTION_ALIASES` -> the method with its budget.
    """
    expanded = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if override in OPTION_ALIASES:
            expanded.extend(OPTION_ALIASES[override])
            continue
        if sep and key == "attention" and value and "," not in value and value not in group_options("attention"):
            expanded.extend(["attention=native", f"attention.backend={value}"])
            continue
        if sep and key in ALIASES:
            override = f"{ALIASES[key]}={'null' if value.lower() == 'none' else value}"
        expanded.append(override)
    return expanded


#: overrides -> composed config (oldest dropped first beyond _COMPOSED_MAX)
_COMPOSED: dict[tuple[str, ...], DictConfig] = {}
_COMPOSED_MAX = 256


def _compose(overrides: list[str]) -> DictConfig:
    register_schemas()
    try:
        # a running Hydra app (the CLI's) is set aside for this compose and restored after it
        with hydra_app_set_aside(), initialize_config_module(config_module=CONFIG_MODULE, version_base=None):
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise ConfigError(explain_compose_error(err)) from None
    problem = schema_choice_problem(cfg.hydra.runtime.choices)
    if problem:
        raise ConfigError(problem)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def overrides_touch_group(overrides: Sequence[str], group: str) -> bool:
    """Whether any override chooses or sets something in ``group`` (``model=flux``,
    ``model.pretrained=...``, ``+model.x=1``), parsed with Hydra's own override grammar."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise ConfigError(explain_compose_error(err)) from None
    return any(o.key_or_group == group or o.key_or_group.startswith(f"{group}.") for o in parsed)


def _schema_keys(schema_name: str) -> list[str]:
    for schemas in [{"schema_engine": engine_config_class()}, *group_schemas().values()]:
        for node in schemas.values():
            if node.__name__ == schema_name:
                return list(node.__dataclass_fields__)
    return []


def explain_compose_error(err: Exception) -> str:
    """Turn a Hydra/OmegaConf composition error into one line that names the fix."""
    text = str(err)
    cause = err.__cause__ or err.__context__
    full = text + "\n" + (str(cause) if cause else "")

    missing = re.search(r"Could not find '([\w/]+)/([^']+)'", full)
    if missing:
        group, option = missing.group(1), missing.group(2)
        # Hydra lists the group's options on its whole search path (user config dirs included)
        listed = re.search(rf"Available options in '{re.escape(group)}':\n((?:\t[^\n]*\n?)*)", full)
        found = [line.strip() for line in listed.group(1).splitlines() if line.strip()] if listed else group_options(group)
        options = ", ".join(found) or "(none shipped)"
        return f"unknown option {group}={option}; available {group} options: {options}"

    unknown_group = re.search(r"Could not override '([^']+)'.*?No match in the defaults list", full, re.S)
    if unknown_group:
        return f"unknown config group '{unknown_group.group(1)}'; groups: {', '.join(group_names())}"

    bad_key = re.search(r"Key '([^']+)' not in '(\w+)'", full)
    if bad_key:
        key, schema = bad_key.group(1), bad_key.group(2)
        where = re.search(r"full_key: (\S+)", full)
        valid = ", ".join(_schema_keys(schema))
        full_key = where.group(1) if where else key
        hint = f"; valid keys: {valid}" if valid else ""
        if schema == NoneConfig.__name__:
            group = full_key.split(".")[0]
            hint += f" (the chosen {group} option has no settings: pick one first, e.g. {group}=<option> {full_key}=...)"
        return f"unknown key {full_key}{hint}"

    # an Enum field (compile.mode, quant.scheme, ...) given a value outside its closed set
    not_a_choice = re.search(r"Invalid value '([^']*)', expected one of \[([^\]]*)\]\s+full_key: (\S+)", full)
    if not_a_choice:
        value, choices, key = not_a_choice.groups()
        return f"{key}={value} is unknown; use one of {choices}"

    conversion = (re.search(r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+)", full)
                  or re.search(r"Value '([^']*)' is not a valid (\w+)", full))
    if conversion:
        where = re.search(r"full_key: (\S+)", full)
        key = where.group(1) if where else "a key"
        kind = conversion.group(2).lower()
        return f"{key}={conversion.group(1)} is not a valid {kind}; give a value of type {kind}"

    first_line = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
    not_a_list = re.search(r"str is not a ListConfig, list or tuple.\s+full_key: (\S+)", full)
    if not_a_list:
        return f"{not_a_list.group(1)} takes a list: write {not_a_list.group(1)}=[a,b] (brackets, commas)"
    hint = re.search(r"To append to your config use (\S+)", text)
    if hint:  # a dict that takes new keys (workload.call_kwargs): Hydra's own fix, kept
        return f"invalid overrides: {first_line} (it holds no such key yet); add it with {hint.group(1)}"
    return f"invalid overrides: {first_line}"
