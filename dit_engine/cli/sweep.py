"""A sweep's cells, as the plan check composes and plans them before the first one runs."""

from __future__ import annotations

import itertools

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from dit_engine.cli.overrides import user_overrides
from dit_engine.errors import ConfigError

#: A sweep larger than this is checked on its first cells only (a search space, not a grid).
MAX_CHECKED_CELLS = 512


def sweep_cells(config: DictConfig) -> list[list[str]]:
    """Every cell of a sweep: ``hydra.sweeper.params`` and the command line (which wins for a key
    set in both), each comma list or ``range()`` expanded, crossed. A sweep value that is not a
    list (an Optuna ``interval``) is left to the sweeper; its key keeps the config's value."""
    parser = OverridesParser.create()
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    try:
        by_key = {o.key_or_group: o for o in parser.parse_overrides([f"{k}={v}" for k, v in params.items()])}
        by_key.update({o.key_or_group: o for o in parser.parse_overrides(user_overrides(config.hydra.overrides.task))})
    except HydraException as err:
        raise ConfigError(f"invalid sweep: {str(err).strip().splitlines()[0]}") from None
    choices = []
    for override in by_key.values():
        if not override.is_sweep_override():
            choices.append([override.input_line])
            continue
        try:
            values = list(override.sweep_string_iterator())
        except Exception:  # an interval: the sweeper samples it, nothing to enumerate
            continue
        prefix = {"ADD": "+", "FORCE_ADD": "++", "DEL": "~"}.get(override.type.name, "")
        choices.append([f"{prefix}{override.key_or_group}={value}" for value in values])
    return [list(cell) for cell in itertools.islice(itertools.product(*choices), MAX_CHECKED_CELLS)]
