"""The adapter contract: everything model-specific the engine needs, mostly as data.

An adapter says which pipelines it serves, where their transformer(s) and block lists live, how
each block list is called (its :class:`BlockPattern`), how to load the model and what a default
workload looks like. Third-party packages ship a subclass and register it under the entry-point
group ``dit_engine.adapters``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, ClassVar

import torch


@dataclass(frozen=True)
class BlockPattern:
    """How a parent transformer calls one kind of block and what the block returns.

    Attributes:
        name: short label used in plans and reports.
        hidden: name of the image-stream argument.
        hidden_position: its position when passed positionally.
        encoder: name of the text-stream argument, or ``None`` for single-stream blocks.
        encoder_position: its position when passed positionally.
        returns: order of the returned streams, e.g. ``("encoder", "hidden")`` for the FLUX
            lineage, ``("hidden", "encoder")`` for CogVideoX/Hunyuan, ``("hidden",)`` for blocks
            that return one tensor.
    """

    name: str
    hidden: str = "hidden_states"
    hidden_position: int = 0
    encoder: str | None = "encoder_hidden_states"
    encoder_position: int = 1
    returns: tuple[str, ...] = ("encoder", "hidden")

    def read_inputs(self, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The (hidden, encoder) streams a block was called with."""
        hidden = kwargs[self.hidden] if self.hidden in kwargs else args[self.hidden_position]
        encoder = None
        if self.encoder is not None:
            if self.encoder in kwargs:
                encoder = kwargs[self.encoder]
            elif len(args) > self.encoder_position:
                encoder = args[self.encoder_position]
        return hidden, encoder

    def read_outputs(self, output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The (hidden, encoder) streams a block returned."""
        if len(self.returns) == 1:
            return output, None
        streams = dict(zip(self.returns, output))
        return streams["hidden"], streams.get("encoder")

    def make_output(self, hidden: torch.Tensor, encoder: torch.Tensor | None) -> Any:
        """A block output carrying the given streams, in the order the parent expects."""
        if len(self.returns) == 1:
            return hidden
        streams = {"hidden": hidden, "encoder": encoder}
        return tuple(streams[name] for name in self.returns)


#: FLUX lineage (pattern A/B in tiny-zoo.md): keywords in, ``(encoder, hidden)`` out. FLUX's
#: single-stream blocks in diffusers 0.42 take and return both streams too; so do SD3, AuraFlow's
#: joint blocks, Qwen-Image, Chroma, Bria, Ovis, LongCat and FLUX.2's dual blocks.
DUAL_STREAM_ENCODER_FIRST = BlockPattern(name="dual(encoder,hidden)")

#: CogVideoX / CogView / Hunyuan / Mochi / HiDream lineage (pattern D): ``(hidden, encoder)`` out.
DUAL_STREAM_HIDDEN_FIRST = BlockPattern(name="dual(hidden,encoder)", returns=("hidden", "encoder"))

#: Cross-attention DiTs (pattern E: Wan, LTX, PixArt, Cosmos...): the text is read-only context,
#: the block returns the image stream alone.
CROSS_ATTENTION = BlockPattern(name="cross-attn(hidden)", returns=("hidden",))

#: One stream in, one out (pattern C: a joint sequence the parent concatenated, or a DiT without
#: text): FLUX.2 / Chroma / AuraFlow single blocks, Lumina2, Z-Image, OmniGen, DiT.
SINGLE_STREAM = BlockPattern(name="single(hidden)", encoder=None, returns=("hidden",))


#: ``probe(first_block, args, kwargs) -> tensor``: the timestep-modulated input TeaCache watches.
Probe = Callable[[torch.nn.Module, tuple, dict], torch.Tensor]


def flux_modulated_input(block: torch.nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """TeaCache's probe for FLUX-style dual-stream blocks: ``norm1(hidden_states, emb=temb)``."""
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    temb = kwargs["temb"] if "temb" in kwargs else args[2]
    return block.norm1(hidden, emb=temb)[0]


def timestep_embedding_input(block: torch.nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """TeaCache's probe when the modulated input is not exposed: the timestep embedding the block
    is modulated with (``temb``, keyword or third positional), as TeaCache4Wan2.1 does."""
    return kwargs["temb"] if "temb" in kwargs else args[2]


@dataclass(frozen=True)
class BlockInput:
    """TeaCache's probe for blocks whose timestep embedding has another name or place: the block
    argument ``name`` (keyword), else positional argument ``position``. A tuple or list value
    (e.g. FLUX.2's per-stream modulation) is probed through its first tensor.

    Example: ``teacache_probe = BlockInput("emb", 2)`` for CogView3-Plus blocks.
    """

    name: str
    position: int | None = None

    def __call__(self, block: torch.nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
        if self.name in kwargs:
            value = kwargs[self.name]
        elif self.position is not None and len(args) > self.position:
            value = args[self.position]
        else:
            raise KeyError(f"the block was called without {self.name!r}; fix the adapter's teacache_probe")
        while isinstance(value, (tuple, list)):
            value = next(v for v in value if v is not None)
        return value


@dataclass(frozen=True)
class BlockSpec:
    """One block list of a transformer: its attribute path and its call pattern."""

    path: str
    pattern: BlockPattern


@dataclass(frozen=True)
class ModelInfo:
    """Shape facts the plan compiler checks against, known without loading weights.

    Attributes:
        blocks: block-list path -> number of blocks, in execution order.
        num_heads: attention heads (parallelism checks).
        source: where the facts came from (``config.json`` path, embedded weights, adapter default).
        vae_class: the pipeline's VAE class name, where known before loading (``model_index.json``)
            or read off a loaded pipeline; None when unknown.
    """

    blocks: dict[str, int]
    num_heads: int
    source: str
    vae_class: str | None = None

    @property
    def total_blocks(self) -> int:
        return sum(self.blocks.values())


@dataclass
class WorkloadDefaults:
    """A model family's default workload (used where ``workload.*`` is null)."""

    prompts: list[str]
    num_inference_steps: int
    guidance_scale: float
    height: int | None = None
    width: int | None = None
    extra_call_kwargs: dict[str, Any] = field(default_factory=dict)


def attention_modules(transformer: torch.nn.Module):
    """``(name, module)`` of every diffusers attention module in ``transformer`` (the legacy
    ``Attention`` class and the ``AttentionModuleMixin`` ones)."""
    from diffusers.models.attention import AttentionModuleMixin
    from diffusers.models.attention_processor import Attention

    for name, module in transformer.named_modules():
        if isinstance(module, (Attention, AttentionModuleMixin)):
            yield name, module


class Adapter:
    """Base class of model adapters. Subclasses mostly set class attributes.

    Attributes:
        name: entry-point name (``flux``).
        pipeline_classes: names of the diffusers pipeline classes this adapter serves.
        transformer_attrs: pipeline attributes holding a DiT (two for Wan 2.2 experts).
        block_specs: the block lists of each transformer, in execution order.
        teacache_probe: how TeaCache reads the timestep-modulated input off the first block.
        transformer_class: the diffusers class of the transformer (its parallel plans are read
            off it without loading weights).
        cross_attention_modules: globs of attention modules that attend the (unsharded) text
            only; context parallelism leaves them alone.
        default_pretrained, default_revision, default_dtype: what ``model=<name>`` composes for
            ``model.pretrained`` / ``revision`` / ``dtype`` (the family's flagship checkpoint);
            served from the adapter when no ``conf/model/<name>.yaml`` exists.
    """

    name: ClassVar[str] = ""
    default_pretrained: ClassVar[str | None] = None
    default_revision: ClassVar[str | None] = None
    default_dtype: ClassVar[str] = "float32"
    pipeline_classes: ClassVar[tuple[str, ...]] = ()
    transformer_attrs: ClassVar[tuple[str, ...]] = ("transformer",)
    block_specs: ClassVar[tuple[BlockSpec, ...]] = ()
    #: TeaCache's probe: ``(first block, args, kwargs) -> timestep-modulated input``; None if unknown.
    teacache_probe: ClassVar[Probe | None] = None
    #: The transformer's diffusers class name; its ``_cp_plan`` / ``_tp_plan`` are the default
    #: parallel plans (see :meth:`context_parallel_plan`).
    transformer_class: ClassVar[str | None] = None
    cross_attention_modules: ClassVar[tuple[str, ...]] = ()
    #: Transformer forward arguments whose first dimension is the batch (CFG parallel splits a
    #: batched cond + uncond call along them).
    batch_inputs: ClassVar[tuple[str, ...]] = (
        "hidden_states", "encoder_hidden_states", "timestep", "pooled_projections", "guidance",
        "encoder_hidden_states_mask", "encoder_attention_mask", "encoder_hidden_states_image",
    )
    #: How the family's pipelines run classifier-free guidance (docs/models.md and
    #: :meth:`cfg_calls`): ``batched`` (cond and uncond in one transformer call), ``separate``
    #: (two calls per step when ``guidance_scale > 1``), ``true_cfg`` (two calls when
    #: ``true_cfg_scale > 1`` and a negative prompt is given), ``distilled`` (guidance is an
    #: input of the transformer: one call), ``none`` (no guidance), ``unknown``.
    cfg_mode: ClassVar[str] = "unknown"
    provider = None  # set by the registry

    def _transformer_class(self) -> type | None:
        if self.transformer_class is None:
            return None
        import diffusers

        return getattr(diffusers, self.transformer_class, None)

    def context_parallel_plan(self) -> dict[str, Any] | None:
        """Where the sequence is split and gathered (diffusers' ``_cp_plan`` format), or None
        when the family has none; the default is the plan diffusers ships on the class."""
        return getattr(self._transformer_class(), "_cp_plan", None)

    def tensor_parallel_plan(self) -> dict[str, str] | None:
        """Module glob -> ``colwise`` / ``rowwise`` (diffusers' ``_tp_plan``), or None."""
        return getattr(self._transformer_class(), "_tp_plan", None)

    def cfg_calls(self, call_kwargs: dict[str, Any]) -> int | None:
        """Transformer calls per denoising step for these call arguments (2 with separate CFG
        branches), or None when the adapter cannot tell (read off :attr:`cfg_mode`)."""
        if self.cfg_mode in ("batched", "distilled", "none"):
            return 1
        if self.cfg_mode == "separate":
            return 2 if call_kwargs.get("guidance_scale", self.workload_defaults().guidance_scale) > 1 else 1
        if self.cfg_mode == "true_cfg":
            negative = call_kwargs.get("negative_prompt") is not None or call_kwargs.get("negative_prompt_embeds") is not None
            return 2 if call_kwargs.get("true_cfg_scale", 1.0) > 1 and negative else 1
        return None

    def cfg_output_shape(self, transformer: torch.nn.Module, hidden_states: torch.Tensor) -> tuple[int, ...] | None:
        """The shape of ``transformer``'s output for a call on ``hidden_states``, where the family
        knows it without running the call; None where it does not (the default). CFG parallel uses
        it to split two-call CFG (``cfg_mode`` ``separate`` / ``true_cfg``) from the first step: the
        first call returns a placeholder of this shape while the other rank computes the second."""
        return None

    def describe(self) -> list[str]:
        """Extra lines for plan.txt (the automatic adapter lists what it inferred)."""
        return []

    def communication_workload(self, model_info: ModelInfo, height: int | None, width: int | None) -> Any:
        """One transformer call's shape for the communication model
        (:class:`dit_engine.parallel.volume.Workload`: tokens, hidden size, attention layers...),
        for ``parallel=auto``'s predicted bytes; None where the family does not say."""
        return None

    def cfg_hint(self) -> str:
        """How a user turns CFG on for this family (named in errors)."""
        return "set workload.guidance_scale above 1"

    def matches(self, pipe: Any) -> bool:
        """Whether this adapter serves ``pipe`` (by pipeline class name, subclasses included)."""
        return any(cls.__name__ in self.pipeline_classes for cls in type(pipe).__mro__)

    def transformers(self, pipe: Any) -> dict[str, torch.nn.Module]:
        """The pipeline's DiTs by attribute name (absent ones skipped)."""
        found = {attr: getattr(pipe, attr, None) for attr in self.transformer_attrs}
        return {attr: module for attr, module in found.items() if module is not None}

    def block_lists(self, transformer: torch.nn.Module) -> list[tuple[BlockSpec, torch.nn.ModuleList]]:
        """The transformer's block lists in execution order, with their specs."""
        return [(spec, transformer.get_submodule(spec.path)) for spec in self.block_specs]

    def model_info_from_pipeline(self, pipe: Any) -> ModelInfo:
        """Shape facts read off a loaded pipeline."""
        transformer = next(iter(self.transformers(pipe).values()))
        blocks = {spec.path: len(blocks) for spec, blocks in self.block_lists(transformer)}
        heads = int(getattr(transformer.config, "num_attention_heads", 0))
        vae = getattr(pipe, "vae", None)
        return ModelInfo(blocks=blocks, num_heads=heads, source=f"loaded {type(transformer).__name__}",
                         vae_class=type(vae).__name__ if vae is not None else None)

    # The methods below are what the CLI engine needs on top of `apply`.

    def model_info(self, model_cfg: Any) -> ModelInfo:
        """Shape facts from config files only (no weights): used by the plan compiler."""
        raise NotImplementedError

    def check(self, model_cfg: Any, workload: Any, dry_run: bool) -> list[str]:
        """Problems with the model config or workload for this family, as one-line fixes.

        ``dry_run`` runs load nothing, so a missing ``model.pretrained`` is no problem there.
        """
        return []

    def pipeline_class(self, model_cfg: Any) -> type | None:
        """The pipeline class ``load`` will return, when known without loading (checks the
        workload's ``call_kwargs`` against its ``__call__``); None when unknown."""
        return None

    def call_kwargs_problems(self, model_cfg: Any, call_kwargs: dict[str, Any]) -> list[str]:
        """``workload.call_kwargs`` the pipeline's ``__call__`` does not take, as one-line fixes."""
        import inspect

        cls = self.pipeline_class(model_cfg)
        if cls is None or not call_kwargs:
            return []
        parameters = inspect.signature(cls.__call__).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return []
        unknown = sorted(set(call_kwargs) - set(parameters))
        if not unknown:
            return []
        return [f"workload.call_kwargs.{unknown[0]}: {cls.__name__}.__call__ takes no such argument; "
                f"it takes {', '.join(n for n in parameters if n != 'self')}"]

    def load(self, model_cfg: Any, dtype: torch.dtype, load_kwargs: dict[str, Any]) -> Any:
        """Load the pipeline (left where ``from_pretrained`` puts it: the session places it).

        ``load_kwargs`` are the plan's load-time arguments (``quantization_config``,
        ``device_map``...), passed on to ``from_pretrained``.
        """
        raise NotImplementedError

    def workload_defaults(self) -> WorkloadDefaults:
        """Default prompts, steps, guidance and size for this family."""
        raise NotImplementedError

    def call_kwargs(self, prompts: list[str], steps: int, guidance: float, height, width) -> dict[str, Any]:
        """Pipeline call keyword arguments for one batch (generator and output type added by the engine)."""
        kwargs = {"prompt": prompts, "num_inference_steps": steps, "guidance_scale": guidance}
        if height is not None:
            kwargs["height"] = height
        if width is not None:
            kwargs["width"] = width
        return kwargs
