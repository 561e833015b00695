"""``parallel=``: Ulysses, Ring, USP, CFG and tensor parallelism on torch.distributed, as one
plan step (stage SHARD) that composes with every cache and calibrator.

What it installs on every transformer, from data on the adapter:

* the context-parallel plan (diffusers' ``_cp_plan`` format; :mod:`.sharding`): where the
  sequence is split into per-rank chunks and gathered back;
* :class:`~.attention.ContextParallelAttention` in place of SDPA inside each self-attention
  module (cross-attention, e.g. Wan's ``attn2``, attends the whole text and needs nothing);
* with ``cfg_degree=2``, :class:`~.cfg.CfgParallelHook` around the transformer (outermost);
* with ``tp_degree > 1``, diffusers' ``_tp_plan`` through torch's ``parallelize_module``.

Caches stay consistent across ranks because every statistic they decide on is reduced over the
sequence group (:func:`dit_engine.caches.block_cache.relative_l1`): every rank takes the same
decision, and it is the decision of the single-process run.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from diffusers.hooks import HookRegistry
from torch.distributed.tensor import DTensor

from dit_engine.adapter import ModelInfo, attention_modules
from dit_engine.config.groups import Stage
from dit_engine.errors import DitEngineError
from dit_engine.hooks import remove_hook
from dit_engine.parallel.attention import ContextParallelAttention, SdpaInterceptor
from dit_engine.parallel.auto import nodes_problem
from dit_engine.parallel.collectives import SequenceGroup
from dit_engine.parallel.cfg import CfgParallelHook
from dit_engine.parallel.mesh import ParallelMesh, ensure_process_group, launched_world
from dit_engine.parallel.report import per_rank_metrics
from dit_engine.parallel.sharding import SequenceSharding
from dit_engine.parallel.tensor import shard_linear_layers
from dit_engine.parallel.text_encoder import TextEncoderParallel, text_encoders
from dit_engine.parallel.vae import VaeParallel, vae_parallel_problem
from dit_engine.parallel_dims import ParallelDims
from dit_engine.transforms.base import ApplyContext, PlanContext, Transform
from dit_engine.parallel.config import ParallelConfig  # noqa: F401 - the schema, torch-free (re-exported)


#: ``parallel.comm_dtype`` values (null: the model's dtype)
COMM_DTYPES = ("fp8",)
#: head sub-groups of ``parallel.ulysses_overlap``: two keep one exchange in flight per attention
OVERLAP_HEAD_GROUPS = 2


#: a collective's wait: from a second to a day (beyond, a hung peer is never reported)
TIMEOUT_RANGE_S = (1.0, 86400.0)
#: a rank's silence before its launch is stopped: its heartbeat beats every few seconds
HEARTBEAT_RANGE_S = (5.0, 3600.0)
#: ranks one machine starts unless ``parallel.allow_large_world=true``
MAX_LOCAL_WORLD = 64


class ParallelTransform(Transform):
    """Spreads every transformer call over the ranks of the mesh; see the module docstring."""

    name = "shard.torch_distributed"
    stage = Stage.SHARD
    config_class = ParallelConfig

    @classmethod
    def is_reversible(cls, config: ParallelConfig) -> bool:
        # Context parallelism is hooks only; tensor parallelism replaces weights by shards.
        return config.tp_degree == 1

    @classmethod
    def complete_config(cls, config: ParallelConfig, adapter: Any, model_info: ModelInfo, run_config: Any) -> tuple[ParallelConfig, list[str]]:
        """``parallel=auto``: the degrees chosen for this model and workload (else ``config`` as it is)."""
        if not config.auto:
            return config, []
        from dit_engine.parallel.auto import choose_layout

        return choose_layout(config, adapter, model_info, run_config)

    @classmethod
    def check(cls, config: ParallelConfig, context: PlanContext) -> list[str]:
        problems = ParallelDims.problems(config)
        if problems:
            return problems
        d = context.dims
        adapter, info = context.adapter, context.model_info
        launched = launched_world()
        if launched is not None and launched != d.world:
            problems.append(
                f"torchrun started {launched} ranks but the parallel degrees multiply to {d.world} ({d.describe()}); "
                f"start {d.world} ranks (torchrun --nproc-per-node {d.world}) or change the degrees"
            )
        if launched is None and d.world > MAX_LOCAL_WORLD and not config.allow_large_world:
            problems.append(f"the parallel degrees multiply to {d.world} ranks ({d.describe()}), more than the {MAX_LOCAL_WORLD} "
                            "one machine starts; lower the degrees, run under torchrun on several nodes, or set "
                            "parallel.allow_large_world=true")
        device = context.device
        if launched is None and d.world > 1 and device is not None and device.type == "cuda":
            gpus = torch.cuda.device_count()
            if d.world > gpus:
                problems.append(f"the parallel degrees need {d.world} GPU ranks but this machine has {gpus} GPU(s); "
                                f"lower the degrees to at most {gpus} in total, or run on several nodes with torchrun")
        if config.cfg_degree not in (1, 2):
            problems.append(f"parallel.cfg_degree={config.cfg_degree}: CFG has two branches; use 1 or 2")
        if d.sequence > 1:
            if adapter.context_parallel_plan() is None:
                problems.append(f"model {adapter.name} has no context-parallel plan (where to split the sequence); "
                                "use parallel.tp_degree or parallel.cfg_degree, or add context_parallel_plan to its adapter")
            heads = info.num_heads
            if heads is not None and heads % config.ulysses_degree and not config.any_shape:
                problems.append(f"parallel.ulysses_degree={config.ulysses_degree} does not divide the model's {heads} attention heads "
                                "and parallel.any_shape=false; set parallel.any_shape=true (uneven head groups), a divisor of the "
                                "heads, or parallel.ring_degree")
        if config.tp_degree > 1:
            plan = adapter.tensor_parallel_plan()
            if plan is None:
                problems.append(f"model {adapter.name} has no tensor-parallel plan; use parallel=ulysses2 or ring2 "
                                "(context parallelism) instead of parallel.tp_degree")
            elif info.num_heads is not None and info.num_heads % config.tp_degree:
                problems.append(f"parallel.tp_degree={config.tp_degree} does not divide the model's {info.num_heads} attention heads; "
                                "use a divisor, or context parallelism (parallel=ulysses2)")
        problems += cls._communication_problems(config, d, device)
        problems += cls._around_the_transformer_problems(config, d, info)
        laid_out = not config.auto or config.auto_reason is not None  # parallel=auto said its own problem
        nodes = nodes_problem(config, d.world) if laid_out else None
        if nodes:
            problems.append(nodes)
        if config.backend not in (None, "gloo", "nccl"):
            problems.append(f"parallel.backend={config.backend}: use gloo, nccl or null (automatic)")
        elif config.backend == "nccl" and device is not None and (device.type != "cuda" or not dist.is_nccl_available()):
            where = f"the model runs on {device.type}" if device.type != "cuda" else "this torch build has no NCCL"
            problems.append(f"parallel.backend=nccl needs CUDA GPUs and NCCL, but {where}; use parallel.backend=gloo, "
                            "or null (automatic: gloo on CPU)")
        low, high = TIMEOUT_RANGE_S
        if not low <= config.timeout_s <= high:
            problems.append(f"parallel.timeout_s={config.timeout_s} must be > 0 and at most a day: use {low:g} to {high:g} seconds "
                            "(how long a collective waits for the other ranks)")
        low, high = HEARTBEAT_RANGE_S
        if not low <= config.heartbeat_timeout_s <= high:
            problems.append(f"parallel.heartbeat_timeout_s={config.heartbeat_timeout_s}: use {low:g} to {high:g} seconds (how long "
                            "a rank may stay silent before its launch is stopped)")
        return problems

    @staticmethod
    def _communication_problems(config: ParallelConfig, d: ParallelDims, device) -> list[str]:
        problems = []
        if config.comm_dtype is not None and config.comm_dtype not in COMM_DTYPES:
            problems.append(f"parallel.comm_dtype={config.comm_dtype}: use fp8 (float8 all-to-all) or null (the model's dtype)")
        elif config.comm_dtype == "fp8":
            if d.ulysses < 2:
                problems.append("parallel.comm_dtype=fp8 quantizes the Ulysses all-to-all, and this plan has none "
                                f"({d.describe()}); set parallel.ulysses_degree >= 2 or drop parallel.comm_dtype")
            if getattr(torch, "float8_e4m3fn", None) is None:
                problems.append(f"parallel.comm_dtype=fp8 needs torch's float8_e4m3fn, which torch {torch.__version__} lacks; "
                                "upgrade torch or drop parallel.comm_dtype")
            elif device is not None and device.type not in ("cpu", "cuda"):
                problems.append(f"parallel.comm_dtype=fp8 needs float8 casts, which the {device.type} device lacks; "
                                "run on CPU or CUDA, or drop parallel.comm_dtype")
        if config.ulysses_overlap and d.ulysses < 2:
            problems.append(f"parallel.ulysses_overlap=true overlaps the Ulysses all-to-all, and this plan has none ({d.describe()}); "
                            "set parallel.ulysses_degree >= 2 or drop parallel.ulysses_overlap")
        return problems

    @staticmethod
    def _around_the_transformer_problems(config: ParallelConfig, d: ParallelDims, info: ModelInfo) -> list[str]:
        problems = []
        for key in ("vae", "text_encoder"):
            if getattr(config, key) and d.world < 2:
                problems.append(f"parallel.{key}=true splits the {key.replace('_', ' ')} over the plan's ranks, and this plan "
                                f"has one; set the degrees (e.g. parallel=ulysses2) or drop parallel.{key}")
        if config.vae and info.vae_class is not None:
            problem = vae_parallel_problem(info.vae_class)
            if problem:
                problems.append(problem)
        return problems

    @classmethod
    def workload_problems(cls, config: ParallelConfig, adapter: Any, call_kwargs: dict[str, Any]) -> list[str]:
        if config.cfg_degree != 2:
            return []
        calls = adapter.cfg_calls(call_kwargs)
        if calls is not None and calls < 2:
            return [f"parallel.cfg_degree=2 needs two CFG branches, but this {adapter.name} workload makes one transformer call "
                    f"per step (guidance-distilled or CFG off); {adapter.cfg_hint()} or drop parallel.cfg_degree"]
        return []

    @classmethod
    def describe(cls, config: ParallelConfig, model_info: ModelInfo) -> str:
        d = ParallelDims.from_config(config)
        shape = "any shape (uneven splits allowed)" if config.any_shape else "even splits only"
        chosen = f" (parallel=auto: {config.auto_reason})" if config.auto_reason else ""
        exchange = "".join([
            "; Ulysses all-to-all in float8 with per-tensor scales" if config.comm_dtype == "fp8" else "",
            f"; Ulysses overlapped over {OVERLAP_HEAD_GROUPS} head sub-groups" if config.ulysses_overlap else "",
        ])
        around = [f"{part} split over the {d.world} ranks" for part, on in
                  (("VAE rows", config.vae), ("text-encoder prompts", config.text_encoder)) if on]
        return (f"torch.distributed over {d.world} rank(s): {d.describe()}{chosen}; {shape}{exchange}; "
                f"backend {config.backend or 'auto'}" + "".join(f"; {a}" for a in around))

    # -- apply ------------------------------------------------------------------------------

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        degrees = context.dims
        device = next(iter(context.transformers.values())).device
        if degrees.world > 1:
            ensure_process_group(device, self.config.backend, self.config.timeout_s)
        self.mesh = mesh = ParallelMesh(degrees, device)
        self.context = context
        self.shardings: list = []
        self.around: list = []  # VAE and text-encoder splits
        self.attention_handles: list = []
        self.cfg_hooks: list = []
        self.sharded_parameters = 0
        # Every group memoizes its ranks' chunk lengths within one call (sequence length and batch
        # may change between calls): forget them when a transformer call starts.
        self.call_hooks = [t.register_forward_pre_hook(lambda _m, _a: mesh.forget_lengths())
                           for t in context.transformers.values()]
        if degrees.tp > 1:
            for transformer in context.transformers.values():
                self._shard_weights(transformer)
        if degrees.sequence > 1:
            attention = self.attention = ContextParallelAttention(
                mesh.ulysses, mesh.ring, fp8=self.config.comm_dtype == "fp8",
                head_groups=OVERLAP_HEAD_GROUPS if self.config.ulysses_overlap else 1)
            plan = context.adapter.context_parallel_plan()
            for transformer in context.transformers.values():
                self.shardings.append(SequenceSharding(transformer, plan, mesh.sequence))
                self._intercept_attention(transformer, attention, context.adapter.cross_attention_modules)
            context.sequence_group = mesh.sequence
        self._split_around_the_transformer(pipe)

    def _split_around_the_transformer(self, pipe: Any) -> None:
        """``parallel.vae`` / ``parallel.text_encoder``: over every rank of the world (each rank
        holds the same latents and prompts there, whatever the degrees)."""
        if self.mesh.world < 2:
            return
        if self.config.text_encoder:
            for encoder in text_encoders(pipe).values():
                self.around.append(TextEncoderParallel(encoder, SequenceGroup(dist.group.WORLD, self.mesh.stats)))
        if self.config.vae:
            vae = getattr(pipe, "vae", None)
            if vae is None:
                raise DitEngineError(f"parallel.vae=true but this {type(pipe).__name__} has no VAE; drop parallel.vae")
            problem = vae_parallel_problem(type(vae).__name__)
            if problem:
                raise DitEngineError(problem)
            self.around.append(VaeParallel(vae, SequenceGroup(dist.group.WORLD, self.mesh.stats)))

    def _intercept_attention(self, transformer: torch.nn.Module, attention, cross: tuple[str, ...]) -> None:
        found = 0
        for name, module in attention_modules(transformer):
            if any(fnmatch.fnmatch(name, g) for g in cross):
                continue
            found += 1
            mode = SdpaInterceptor(attention)

            def enter(_module, _args, mode=mode):
                mode.calls = 0
                mode.__enter__()

            def leave(_module, _args, _output, mode=mode, name=name):
                mode.__exit__(None, None, None)
                if mode.calls == 0:
                    raise DitEngineError(
                        f"attention module {name} did not call scaled_dot_product_attention, so its attention cannot be "
                        "parallelised; use the native attention backend (transformer.set_attention_backend('native'))"
                    )

            self.attention_handles.append(module.register_forward_pre_hook(enter))
            self.attention_handles.append(module.register_forward_hook(leave, always_call=True))
        if not found:
            raise DitEngineError(f"{type(transformer).__name__} has no diffusers attention module to parallelise; use parallel.tp_degree")

    def apply_outer(self, pipe: Any, context: ApplyContext) -> None:
        """CFG parallel wraps every other hook (the caches decide inside one branch's call)."""
        if self.config.cfg_degree < 2:
            return
        for transformer in context.transformers.values():
            hook = CfgParallelHook(self.mesh.cfg, context.step_state, context.adapter.batch_inputs,
                                   transforms=context.applied, batch_group=self.mesh.cfg_sequence,
                                   one_call_per_step=context.adapter.cfg_mode in ("batched", "distilled", "none"),
                                   output_shape=context.adapter.cfg_output_shape)
            HookRegistry.check_if_exists_or_initialize(transformer).register_hook(hook, CFG_HOOK)
            self.cfg_hooks.append(transformer)

    def _shard_weights(self, transformer: torch.nn.Module) -> None:
        shard_linear_layers(transformer, self.context.adapter.tensor_parallel_plan(), self.mesh.tp_mesh)

        self.sharded_parameters += sum(isinstance(p, DTensor) for p in transformer.parameters())

    def remove(self, pipe: Any) -> None:
        for sharding in self.shardings + self.around:
            sharding.remove()
        for handle in self.attention_handles + self.call_hooks:
            handle.remove()
        for transformer in self.cfg_hooks:
            remove_hook(transformer, CFG_HOOK)
        self.shardings, self.attention_handles, self.cfg_hooks, self.call_hooks, self.around = [], [], [], [], []

    def reset_stats(self) -> None:
        self.mesh.stats.reset()

    # -- the HasExactVariant protocol: PSNR of float8 communication against the exact exchange --

    def is_lossy(self) -> bool:
        return self.config.comm_dtype is not None and getattr(self, "attention", None) is not None

    @contextmanager
    def exact(self) -> Iterator[None]:
        """Within: the Ulysses all-to-all in the model's own dtype (what ``comm_dtype=fp8`` approximates)."""
        fp8, self.attention.fp8 = self.attention.fp8, False
        try:
            yield
        finally:
            self.attention.fp8 = fp8

    def stats(self) -> dict[str, Any]:
        d = self.mesh.degrees
        return {
            "rank": self.mesh.rank,
            "world_size": self.mesh.world,
            "degrees": {"ulysses": d.ulysses, "ring": d.ring, "cfg": d.cfg, "tp": d.tp},
            "collective_calls": self.mesh.stats.calls,
            "collective_s": self.mesh.stats.seconds(),
            "bytes_sent": self.mesh.stats.bytes_sent,
            # tensor parallel: parameters held as shards (its collectives run inside DTensor, uncounted)
            "sharded_parameters": self.sharded_parameters,
            "text_encoder_calls_split": sum(p.calls_split for p in self.around if isinstance(p, TextEncoderParallel)),
            "vae_calls_split": sum(p.calls_split for p in self.around if isinstance(p, VaeParallel)),
        }

    #: metrics.json's section for :meth:`run_metrics` (the ReportsRunMetrics protocol)
    metrics_key = "parallel"

    def run_metrics(self, latency: dict[str, Any]) -> dict[str, Any]:
        """Every rank's latency (``latency["total_s"]``, this rank's) and time in collectives,
        gathered from every rank: a collective, so every rank calls it at the same point."""
        return per_rank_metrics(self.stats(), latency)


CFG_HOOK = "dit_engine.cfg_parallel"
