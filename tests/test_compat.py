"""dit_engine.compat: every private API it reaches works on the installed torch, diffusers and Hydra
(the versions its docstrings name). A failure here after an upgrade names the function to fix."""

from __future__ import annotations

import torch

from dit_engine import compat


def test_hydra_parser_and_running_loader():
    assert compat.hydra_args_parser().parse_args(["cache=dbcache"]).overrides == ["cache=dbcache"]
    assert compat.running_config_loader() is None  # no Hydra app runs in a test


def test_hydra_app_is_set_aside_and_restored():
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_module(config_module="dit_engine.conf", version_base=None):
        running = GlobalHydra.instance().hydra
        assert compat.running_config_loader() is running.config_loader
        with compat.hydra_app_set_aside():
            assert not GlobalHydra.instance().is_initialized()
        assert GlobalHydra.instance().hydra is running
    with compat.hydra_app_set_aside():
        pass
    assert not GlobalHydra.instance().is_initialized()


def test_flatten_mesh(tmp_path):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1, 1), mesh_dim_names=("ring", "ulysses"))
        flat = compat.flatten_mesh(mesh["ring", "ulysses"], "sequence")
        assert flat.ndim == 1 and dist.get_world_size(flat.get_group()) == 1
    finally:
        dist.destroy_process_group()


def test_context_parallel_classes():
    inputs, outputs = compat.context_parallel_classes()
    assert inputs(split_dim=1, expected_dims=3).split_dim == 1
    assert outputs(gather_dim=1, expected_dims=3).gather_dim == 1


def test_hook_registry_helpers():
    from diffusers.hooks import HookRegistry, ModelHook

    parent = torch.nn.Sequential(torch.nn.Linear(2, 2))
    assert compat.hook_registry(parent[0]) is None
    registry = HookRegistry.check_if_exists_or_initialize(parent[0])
    registry.register_hook(ModelHook(), "probe")
    assert compat.hook_registry(parent[0]) is registry
    compat.forget_child_registries(registry)
    assert registry._child_registries_cache is None
    registry.remove_hook("probe", recurse=False)
    compat.detach_hook_registry(parent[0])
    assert compat.hook_registry(parent[0]) is None


def test_dynamo_backends_and_counters():
    assert "inductor" in compat.dynamo_backends()
    counters = compat.dynamo_graph_counters()
    assert set(counters) == {"graphs", "graph_breaks"} and all(isinstance(v, int) for v in counters.values())
