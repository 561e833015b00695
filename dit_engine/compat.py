"""Private APIs of the libraries dit_engine builds on, each reached through one function here.

Each function names the version it was checked against; after an upgrade, these are the places to
look at first. Every function imports what it needs itself, so importing this module imports none
of those libraries and each function stands on its own.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any, Callable


def hydra_args_parser() -> argparse.ArgumentParser:
    """Hydra's own command-line parser (its flags; the rest are ``overrides``), the one
    ``@hydra.main`` parses ``sys.argv`` with.

    Checked against Hydra 1.3.8 (``hydra._internal.utils.get_args_parser``).
    """
    from hydra._internal.utils import get_args_parser

    return get_args_parser()


def run_hydra(args: argparse.Namespace, args_parser: argparse.ArgumentParser, task_function: Callable[[Any], Any], *,
              config_path: str, config_name: str) -> None:
    """Run ``task_function`` as ``@hydra.main(config_path, config_name, version_base=None)`` does,
    on a command line already parsed by :func:`hydra_args_parser` (``hydra.main`` parses
    ``sys.argv`` itself, so a caller that adds overrides would have to edit it).

    Checked against Hydra 1.3.8: the body of ``hydra.main``'s wrapper (``hydra._internal.utils._run_hydra``,
    ``hydra.main._get_rerun_conf`` and ``hydra.core.utils._flush_loggers`` for ``--experimental-rerun``).
    """
    from hydra import version
    from hydra._internal.utils import _run_hydra
    from hydra.core.utils import _flush_loggers
    from hydra.main import _get_rerun_conf

    version.setbase(None)
    if args.experimental_rerun is not None:
        task_function(_get_rerun_conf(args.experimental_rerun, args.overrides))
        _flush_loggers()
        return
    _run_hydra(args=args, args_parser=args_parser, task_function=task_function, config_path=config_path,
               config_name=config_name)


def running_config_loader() -> Any:
    """The config loader of the Hydra app running now (its search path holds ``--config-dir`` and
    ``hydra.searchpath``), or None outside one.

    Checked against Hydra 1.3.8 (``GlobalHydra.instance().hydra.config_loader``).
    """
    from hydra.core.global_hydra import GlobalHydra

    global_hydra = GlobalHydra.instance()
    return global_hydra.hydra.config_loader if global_hydra.is_initialized() else None


@contextlib.contextmanager
def hydra_app_set_aside() -> Iterator[None]:
    """Clear Hydra's global app for the body (so ``initialize_config_module`` can start its own) and
    restore the app that was running, if any, afterwards.

    Checked against Hydra 1.3.8 (``GlobalHydra.instance().hydra``, ``.clear()``, ``.initialize(hydra)``).
    """
    from hydra.core.global_hydra import GlobalHydra

    global_hydra = GlobalHydra.instance()
    running_app = global_hydra.hydra
    global_hydra.clear()
    try:
        yield
    finally:
        global_hydra.clear()
        if running_app is not None:
            global_hydra.initialize(running_app)


def flatten_mesh(mesh: Any, name: str) -> Any:
    """One 1-D ``DeviceMesh`` spanning all dimensions of the sub-mesh ``mesh`` (e.g. ``mesh["ring",
    "ulysses"]``), registered under ``name``.

    Checked against torch 2.13.0 (``DeviceMesh._flatten``).
    """
    return mesh._flatten(name)


def context_parallel_classes() -> tuple[type, type]:
    """diffusers' context-parallel plan entries: ``(ContextParallelInput, ContextParallelOutput)``.

    Checked against diffusers 0.42.1 (``diffusers.models._modeling_parallel``).
    """
    from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput

    return ContextParallelInput, ContextParallelOutput


def hook_registry(module: Any) -> Any:
    """The diffusers ``HookRegistry`` attached to ``module``, or None when it has none.

    Checked against diffusers 0.42.1 (the registry lives in ``module._diffusers_hook``).
    """
    return getattr(module, "_diffusers_hook", None)


def detach_hook_registry(module: Any) -> None:
    """Delete ``module``'s (empty) diffusers ``HookRegistry``, as if no hook was ever registered.

    Checked against diffusers 0.42.1 (``module._diffusers_hook``).
    """
    del module._diffusers_hook


def forget_child_registries(registry: Any) -> None:
    """Drop a ``HookRegistry``'s cached list of descendant registries (it goes stale when block
    hooks are added or removed, diffusers #14037); diffusers rebuilds it on next use.

    Checked against diffusers 0.42.1 (``HookRegistry._child_registries_cache``).
    """
    registry._child_registries_cache = None


def dynamo_backends() -> list[str]:
    """The ``torch.compile`` backends registered now (debug and experimental ones left out).

    Checked against torch 2.13.0 (``torch._dynamo.list_backends``).
    """
    import torch._dynamo

    return list(torch._dynamo.list_backends())


def dynamo_graph_counters() -> dict[str, int]:
    """Graphs Dynamo compiled and graph breaks it took so far in this process.

    Checked against torch 2.13.0 (``torch._dynamo.utils.counters``: ``stats.unique_graphs``,
    ``graph_break``).
    """
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values()))}
