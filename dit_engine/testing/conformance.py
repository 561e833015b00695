"""Conformance suites for adapters and transforms: subclass one in a test module, give it a tiny
pipeline, and pytest checks the whole contract.

::

    from dit_engine.testing.conformance import AdapterConformance, PipelineCase

    class TestMyAdapter(AdapterConformance):
        adapter_name = "my_model"

        @pytest.fixture(scope="class")
        @classmethod
        def case(cls):
            pipe = build_my_tiny_pipeline()
            return PipelineCase(pipe, call=lambda: dict(prompt="a cat", num_inference_steps=6,
                                                        generator=torch.Generator().manual_seed(0),
                                                        output_type="pt"))

    class TestMyCache(TransformConformance):
        overrides = ("cache=my_cache",)
        exact_overrides = ("cache=my_cache", "cache.threshold=0")   # None if no setting is exact
        case = <the same fixture>

What is checked (each a test): the adapter is found by the pipeline's class and its block lists
match the model facts; a cache at its exact setting reproduces the plain output bit for bit;
caching runs fewer real block forwards (counted with torch pre-hooks on the blocks, not from the
cache's own counters); CFG branches keep separate state (when the case makes two transformer calls
per step); two requests in a row give the same output (no state leaks); ``remove()`` restores the
outputs and the module structure exactly; a diffusers hook added afterwards still runs; diffusers'
``reset_stateful_hooks`` reaches the engine's stateful hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from diffusers.hooks import HookRegistry, ModelHook

import dit_engine
from dit_engine.compat import hook_registry
from dit_engine.digits import load_digits_pipeline
from dit_engine.registry import Registry


@dataclass
class PipelineCase:
    """A tiny pipeline and how to call it.

    Attributes:
        pipe: the pipeline (built once per test class; the suites leave it as they found it).
        call: returns fresh call kwargs (new generators) for a deterministic run with
            ``output_type="pt"``; one transformer call per step is fine.
        cfg_call: call kwargs that make two transformer calls per step (cond and uncond), or
            None when the pipeline cannot (guidance-distilled models).
        adapter: the adapter expected to serve the pipeline (overrides the suite's
            ``adapter_name``; the tiny zoo sets it per variant).
    """

    pipe: Any
    call: Callable[[], dict]
    cfg_call: Callable[[], dict] | None = None
    adapter: str | None = None


def tiny_model_case(steps: int = 6) -> PipelineCase:
    """The embedded tiny model as a case: two digits, ``steps`` steps; ``cfg_call`` runs separate
    cond / uncond calls (guidance 3)."""
    pipe = load_digits_pipeline()
    pipe.set_progress_bar_config(disable=True)

    def call(**extra):
        return dict(prompt=["zero", "seven"], num_inference_steps=steps, output_type="pt",
                    generator=[torch.Generator().manual_seed(i) for i in range(2)], **extra)

    return PipelineCase(pipe, call, cfg_call=lambda: call(guidance_scale=3.0, separate_cfg=True))


def run(pipe: Any, kwargs: dict) -> torch.Tensor:
    """One pipeline call; its images (or video frames) as one float tensor."""
    output = pipe(**kwargs)
    for field in ("images", "frames", "videos", "latents"):
        result = getattr(output, field, None)
        if result is not None:
            break
    else:
        result = output[0]
    if isinstance(result, (list, tuple)):  # a list of per-sample tensors or arrays
        result = torch.stack([torch.as_tensor(r) for r in result])
    return torch.as_tensor(result).float()


def module_structure(pipe: Any) -> list[tuple]:
    """Everything a transform could leave behind on the pipeline's modules: children order,
    instance ``forward`` overrides, diffusers hook registries, torch hooks."""
    structure = []
    for component_name, component in sorted(pipe.components.items()):
        if not isinstance(component, torch.nn.Module):
            continue
        for name, module in component.named_modules():
            structure.append((
                component_name, name, type(module).__name__, tuple(module._modules),
                "forward" in module.__dict__, hook_registry(module) is not None,
                len(module._forward_pre_hooks), len(module._forward_hooks),
            ))
    scheduler = getattr(pipe, "scheduler", None)
    structure.append(("scheduler", tuple(sorted(k for k in vars(scheduler) if k in ("step", "set_timesteps")))))
    return structure


def _witness(block: torch.nn.Module) -> torch.nn.Module:
    """A submodule that runs exactly when the block computes: its (first) attention module. Not
    its first child: a probe such as TeaCache's calls ``norm1`` of a block it then skips."""
    for module in block.modules():
        if module is not block and "Attention" in type(module).__name__:
            return module
    return list(block.children())[-1]


class BlockForwards:
    """Counts the block forwards that really run (pre-hooks on each block's attention, which a
    skipped block never calls), independently of any cache's own counters."""

    def __init__(self, pipe: Any, adapter: Any):
        self.count = 0
        self.handles = []
        for transformer in adapter.transformers(pipe).values():
            for _, blocks in adapter.block_lists(transformer):
                for block in blocks:
                    self.handles.append(_witness(block).register_forward_pre_hook(self._count))

    def _count(self, module, args) -> None:
        self.count += 1

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class _CallCounter(ModelHook):
    """A plain diffusers hook: counts transformer calls, changes nothing."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def pre_forward(self, module, *args, **kwargs):
        self.calls += 1
        return args, kwargs


def _adapter_for(pipe: Any):
    return Registry().adapter_for_pipeline(pipe)


def _with_plan(pipe: Any, overrides: tuple[str, ...], kwargs: dict) -> tuple[torch.Tensor, dict]:
    handle = dit_engine.apply(pipe, *overrides)
    try:
        return run(pipe, kwargs), handle.summary()
    finally:
        handle.remove()


class _Suite:
    """Fixtures and checks shared by both suites. Subclasses provide the ``case`` fixture."""

    @pytest.fixture(scope="class")
    @classmethod
    def case(cls) -> PipelineCase:
        raise NotImplementedError("a conformance suite needs a `case` fixture returning a PipelineCase")

    @pytest.fixture(scope="class")
    @classmethod
    def plain(cls, case) -> torch.Tensor:
        return run(case.pipe, case.call())

    def check_remove_restores(self, case: PipelineCase, plain: torch.Tensor, overrides: tuple[str, ...]) -> None:
        before = module_structure(case.pipe)
        _with_plan(case.pipe, overrides, case.call())
        assert module_structure(case.pipe) == before, "remove() left something behind on the modules"
        assert torch.equal(run(case.pipe, case.call()), plain), "outputs after remove() differ from never applied"

    def check_diffusers_hook_afterwards(self, case: PipelineCase, plain: torch.Tensor, overrides: tuple[str, ...]) -> None:
        _with_plan(case.pipe, overrides, case.call())
        adapter = _adapter_for(case.pipe)
        transformer = next(iter(adapter.transformers(case.pipe).values()))
        counter = _CallCounter()
        HookRegistry.check_if_exists_or_initialize(transformer).register_hook(counter, "conformance.counter")
        try:
            output = run(case.pipe, case.call())
        finally:
            HookRegistry.check_if_exists_or_initialize(transformer).remove_hook("conformance.counter", recurse=False)
        assert counter.calls > 0, "a diffusers hook added after remove() never ran"
        assert torch.equal(output, plain)

    def count_block_forwards(self, case: PipelineCase, overrides: tuple[str, ...]) -> tuple[int, int, dict]:
        """Real block forwards of a plain run and of a run under ``overrides``, and the latter's summary."""
        counter = BlockForwards(case.pipe, _adapter_for(case.pipe))
        try:
            run(case.pipe, case.call())
            plain_forwards, counter.count = counter.count, 0
            _, summary = _with_plan(case.pipe, overrides, case.call())
        finally:
            counter.remove()
        return plain_forwards, counter.count, summary

    def check_no_leak_between_requests(self, case: PipelineCase, overrides: tuple[str, ...]) -> None:
        handle = dit_engine.apply(case.pipe, *overrides)
        try:
            first, second = run(case.pipe, case.call()), run(case.pipe, case.call())
        finally:
            handle.remove()
        assert torch.equal(first, second), "the second request differs: state leaked from the first"


class AdapterConformance(_Suite):
    """The adapter contract, checked on the subclass's tiny pipeline (fixture ``case``)."""

    #: the adapter's entry-point name, expected to be picked for the pipeline
    adapter_name: ClassVar[str] = ""
    #: a block cache that must skip work on this model (static mask: independent of the signal)
    caching_overrides: ClassVar[tuple[str, ...]] = (
        "cache=scm", "cache.mask=10", "cache.policy=static", "cache.warmup_steps=0", "cache.front_blocks=1",
    )
    exact_overrides: ClassVar[tuple[str, ...]] = ("cache=dbcache", "cache.threshold=0")

    #: step forecasting that must run on this model (whole steps forecast by TaylorSeer)
    forecasting_overrides: ClassVar[tuple[str, ...]] = ("cache=scm_static", "calibrator=taylorseer")
    #: TeaCache with an identity rescaling (families without published coefficients) and a
    #: threshold high enough that every step after the warm-up but the last is skipped
    teacache_overrides: ClassVar[tuple[str, ...]] = ("cache=teacache", "cache.coefficients=[1.0,0.0]", "cache.threshold=1000")

    def test_adapter_is_found_by_pipeline_class(self, case):
        assert _adapter_for(case.pipe).name == (case.adapter or self.adapter_name)

    def test_block_lists_match_the_model_facts(self, case):
        adapter = _adapter_for(case.pipe)
        info = adapter.model_info_from_pipeline(case.pipe)
        transformer = next(iter(adapter.transformers(case.pipe).values()))
        lists = adapter.block_lists(transformer)
        assert lists and all(len(blocks) > 0 for _, blocks in lists)
        assert info.blocks == {spec.path: len(blocks) for spec, blocks in lists}

    def test_threshold_zero_is_exact(self, case, plain):
        output, summary = _with_plan(case.pipe, self.exact_overrides, case.call())
        assert torch.equal(output, plain)
        assert summary["steps_cached"] == 0

    def test_caching_runs_fewer_block_forwards(self, case):
        plain_forwards, forwards, summary = self.count_block_forwards(case, self.caching_overrides)
        assert 0 < forwards < plain_forwards
        assert summary["blocks_computed"] == forwards  # the cache's own count is the real one

    def check_runs_and_skips(self, case, plain, overrides: tuple[str, ...]) -> None:
        output, summary = _with_plan(case.pipe, overrides, case.call())
        assert output.shape == plain.shape and torch.isfinite(output).all()
        assert summary["steps_cached"] > 0, f"{' '.join(overrides)} cached no step"

    def test_step_forecasting_runs(self, case, plain):
        self.check_runs_and_skips(case, plain, self.forecasting_overrides)

    def test_teacache_runs(self, case, plain):
        if _adapter_for(case.pipe).teacache_probe is None:
            pytest.skip("the adapter names no timestep-modulated input (teacache_probe): TeaCache is refused for it")
        self.check_runs_and_skips(case, plain, self.teacache_overrides)

    def test_transformers_keep_separate_state(self, case):
        """Every DiT of the pipeline (Wan 2.2's two experts...) caches on its own state."""
        transformers = _adapter_for(case.pipe).transformers(case.pipe)
        if len(transformers) < 2:
            pytest.skip("this pipeline has one transformer")
        _, summary = _with_plan(case.pipe, self.caching_overrides, case.call())
        ran = [name for name, calls in summary["transformer_calls"].items() if calls]
        branches = next(s["branches"] for name, s in summary["transforms"].items() if name.startswith("cache."))
        assert len(ran) >= 2, f"only {ran} ran; give the case a call that reaches every transformer"
        for name in ran:
            assert any(key.startswith(f"{name}/") for key in branches), f"{name} kept no cache state of its own"

    def test_cfg_branches_keep_separate_state(self, case):
        if case.cfg_call is None:
            pytest.skip("this pipeline makes one transformer call per step (no separate CFG branches)")
        _, summary = _with_plan(case.pipe, self.caching_overrides, case.cfg_call())
        steps = case.cfg_call()["num_inference_steps"]
        branches = next(s["branches"] for name, s in summary["transforms"].items() if name.startswith("cache."))
        for transformer in _adapter_for(case.pipe).transformers(case.pipe):
            masks = [branches[key]["masks"] for key in branches if key.startswith(f"{transformer}/")]
            if not masks:
                continue  # an expert that did not run (Wan 2.2 boundary)
            assert {f"{transformer}/cfg0", f"{transformer}/cfg1"} <= set(branches)
            assert sum(len(m) for ms in masks for m in ms) >= 2 * 1  # both branches decided
        total_calls = sum(summary["transformer_calls"].values())
        assert total_calls == 2 * steps

    def test_remove_restores_outputs_and_structure(self, case, plain):
        self.check_remove_restores(case, plain, self.caching_overrides)

    def test_diffusers_hook_works_afterwards(self, case, plain):
        self.check_diffusers_hook_afterwards(case, plain, self.caching_overrides)

    def test_no_state_leaks_between_requests(self, case):
        self.check_no_leak_between_requests(case, self.caching_overrides)


class TransformConformance(_Suite):
    """The transform contract for one option (``overrides``), on the subclass's ``case``."""

    #: the overrides that select the transform under test
    overrides: ClassVar[tuple[str, ...]] = ()
    #: overrides at which the transform must reproduce the plain output exactly; None if none
    exact_overrides: ClassVar[tuple[str, ...] | None] = None
    #: whether the option must run fewer block forwards than the plain pipeline
    skips_blocks: ClassVar[bool] = True

    def test_exact_setting_reproduces_the_plain_output(self, case, plain):
        if self.exact_overrides is None:
            pytest.skip("this option has no exact setting")
        output, _ = _with_plan(case.pipe, self.exact_overrides, case.call())
        assert torch.equal(output, plain)

    def test_runs_fewer_block_forwards(self, case):
        if not self.skips_blocks:
            pytest.skip("this option does not skip blocks")
        plain_forwards, forwards, summary = self.count_block_forwards(case, self.overrides)
        assert forwards < plain_forwards
        assert summary["blocks_computed"] == forwards

    def test_cfg_branches_keep_separate_state(self, case):
        if case.cfg_call is None:
            pytest.skip("this pipeline makes one transformer call per step")
        _, summary = _with_plan(case.pipe, self.overrides, case.cfg_call())
        stats = next((s for name, s in summary["transforms"].items() if name.startswith("cache.")), {})
        if "branches" not in stats:
            pytest.skip("this transform keeps no per-branch state")
        decided = {key.split("/")[-1] for key in stats["branches"]}
        assert {"cfg0", "cfg1"} <= decided

    def test_no_state_leaks_between_requests(self, case):
        self.check_no_leak_between_requests(case, self.overrides)

    def test_remove_restores_outputs_and_structure(self, case, plain):
        self.check_remove_restores(case, plain, self.overrides)

    def test_diffusers_hook_works_afterwards(self, case, plain):
        self.check_diffusers_hook_afterwards(case, plain, self.overrides)

    def test_stateful_hooks_reset_through_diffusers(self, case):
        handle = dit_engine.apply(case.pipe, *self.overrides)
        try:
            first = run(case.pipe, case.call())
            hooks = []
            for transformer in _adapter_for(case.pipe).transformers(case.pipe).values():
                for module in transformer.modules():
                    registry = hook_registry(module)
                    if registry is not None:
                        hooks += [hook for name, hook in registry.hooks.items() if name.startswith("dit_engine")]
                        registry.reset_stateful_hooks(recurse=False)
            if not hooks:
                pytest.skip("this option installs no dit_engine diffusers hooks")
            assert all(hook._is_stateful for hook in hooks), "per-request state must be resettable through diffusers"
            second = run(case.pipe, case.call())
        finally:
            handle.remove()
        assert torch.equal(first, second)
