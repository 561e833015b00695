"""Real-size DiT families for the CPU benchmark (benchmarks/test_bench_real_size.py).

Each family is its published transformer configuration (the values of the hub repository's
``transformer/config.json``, written out here: nothing is downloaded) with seeded random weights,
inside the family's own diffusers pipeline and scheduler, called with random prompt embeddings of
the real caption width instead of text encoders, without a VAE (``output_type="latent"``).
The width, depth, head count and weights' size are the real ones (``BENCH_REAL_SIZE_LAYERS=<n>``
keeps only the first ``n`` blocks, for a quick smoke run); only the activations are small: 16-32
latent tokens and a 16-token caption. At that size a block's cost on one CPU thread is mostly
streaming its float32 weights from memory (a denoising step at full depth: Wan 2.1 1.3B 1.6 s,
PixArt-Σ 0.7 s; about 2 s for the 1.6-2.2 B ones), so a family's 8-step call takes 6-19 s.

Also a worker for the context-parallel check: run under torch's launcher on two gloo ranks
(``python -m torch.distributed.run --nproc-per-node=2 benchmarks/real_size.py <family> <out.json>``),
each rank builds the same family, runs it whole (the single-process reference) and then with
``parallel=ulysses2``, and rank 0 writes both ranks' differences and bytes sent.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from dit_engine.testing.zoo._build import embeds, flow_match_scheduler, generator, seeded_module

#: denoising steps of every call (``BENCH_REAL_SIZE_STEPS``; 4 halves a family's time)
STEPS = int(os.environ.get("BENCH_REAL_SIZE_STEPS", "8"))
#: caption tokens of every prompt embedding (the real pipelines pad to 128-512; a short caption
#: keeps the per-block cross-attention projections from dominating the small image)
TEXT_TOKENS = 16
#: ``BENCH_REAL_SIZE_LAYERS=<n>``: keep the first n blocks of every transformer (smoke runs), at
#: least 3: DBCache always computes a front and a back block and needs a middle one to cache
LAYERS = max(3, int(os.environ["BENCH_REAL_SIZE_LAYERS"])) if os.environ.get("BENCH_REAL_SIZE_LAYERS") else None


# -- schedulers: the ones the hub repositories ship (scheduler/scheduler_config.json) --------------


def _unipc_flow(shift: float):
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
                                   num_train_timesteps=1000)


def _dpm_epsilon():
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                                       prediction_type="epsilon", algorithm_type="dpmsolver++", solver_order=2)


def _dpm_flow(shift: float):
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
                                       algorithm_type="dpmsolver++", solver_order=2)


def _ltx_flow():
    return flow_match_scheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
                                max_image_seq_len=4096, shift_terminal=0.1)


# -- families -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """One real-size family: its published transformer configuration and a small call.

    Attributes:
        name: the benchmark's id (``wan21_1_3b``...).
        repo: the hub repository whose ``transformer/config.json`` ``config`` copies.
        pipeline: the diffusers pipeline class.
        transformer: the diffusers transformer class.
        config: the transformer's configuration (real width, depth, heads).
        scheduler: builds the scheduler the repository ships.
        size: height, width (and num_frames) of the call.
        latent_tokens: image / video tokens per sample of that size (the VAE's factor and the
            patch size: what the block stack attends over, text aside).
        caption_dim: width of the prompt embeddings (the text encoder's hidden size).
        guidance: guidance scale of the call (> 1: CFG on).
        cfg: how the pipeline runs CFG: ``batched`` (cond + uncond in one call) or ``separate``.
        call_extra: builds the family's other call kwargs (masks, pooled embeddings, flags).
        depth_key: the ``config`` key of the block count (``BENCH_REAL_SIZE_LAYERS`` lowers it).
    """

    name: str
    repo: str
    pipeline: str
    transformer: str
    config: dict[str, Any]
    scheduler: Callable[[], Any]
    size: dict[str, int]
    latent_tokens: int
    caption_dim: int
    guidance: float
    cfg: str
    call_extra: Callable[[], dict[str, Any]]
    depth_key: str = "num_layers"

    def build(self, layers: int | None = LAYERS):
        """The pipeline with seeded random weights (float32, eval), ``layers`` blocks or all."""
        import diffusers

        config = dict(self.config)
        if layers is not None:
            config[self.depth_key] = min(layers, config[self.depth_key])
        transformer = seeded_module(getattr(diffusers, self.transformer), **config)
        pipe = getattr(diffusers, self.pipeline)(tokenizer=None, text_encoder=None, vae=None, **_more_components(self.pipeline),
                                                 transformer=transformer, scheduler=self.scheduler())
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def call(self) -> dict[str, Any]:
        """Fresh call kwargs (a new generator): random prompt embeddings, latents out."""
        return dict(prompt_embeds=embeds(1, TEXT_TOKENS, self.caption_dim),
                    negative_prompt_embeds=embeds(1, TEXT_TOKENS, self.caption_dim, seed=3),
                    **self.size, **self.call_extra(), num_inference_steps=STEPS, guidance_scale=self.guidance,
                    output_type="latent", generator=generator(0))

    @property
    def transformer_calls(self) -> int:
        """Transformer calls per denoising step."""
        return 2 if self.cfg == "separate" and self.guidance > 1 else 1

    @property
    def batch(self) -> int:
        """Samples per transformer call."""
        return 2 if self.cfg == "batched" and self.guidance > 1 else 1


def _more_components(pipeline: str) -> dict[str, Any]:
    """Text encoders and tokenizers beyond the first that the pipeline's constructor requires."""
    if pipeline == "StableDiffusion3Pipeline":
        return dict(text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
    return {}


def _masks() -> dict[str, Any]:
    mask = torch.ones(1, TEXT_TOKENS, dtype=torch.long)
    return dict(prompt_attention_mask=mask, negative_prompt_attention_mask=mask.clone())


def _sd3_pooled() -> dict[str, Any]:
    # CLIP-L + CLIP-G pooled outputs: 768 + 1280 = 2048 (the config's pooled_projection_dim)
    return dict(pooled_prompt_embeds=embeds(1, 2048, seed=2), negative_pooled_prompt_embeds=embeds(1, 2048, seed=4))


FAMILIES: dict[str, Family] = {family.name: family for family in (
    Family(
        # Wan-AI/Wan2.1-T2V-1.3B-Diffusers, transformer/config.json
        name="wan21_1_3b", repo="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        pipeline="WanPipeline", transformer="WanTransformer3DModel",
        config=dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                    out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                    qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None,
                    rope_max_seq_len=1024),
        scheduler=lambda: _unipc_flow(shift=3.0),
        # VAE 8x spatial / 4x temporal, patch 1x2x2: 5 frames -> 2 latent frames x 4 x 4 = 32 tokens
        size=dict(height=64, width=64, num_frames=5), latent_tokens=2 * 4 * 4,
        # CFG off: Wan runs cond and uncond as two transformer calls, which would double every
        # call's time (the longest family) and change none of the ratios
        caption_dim=4096, guidance=1.0, cfg="separate", call_extra=dict),
    Family(
        # PixArt-alpha/PixArt-Sigma-XL-2-1024-MS, transformer/config.json
        name="pixart_sigma", repo="PixArt-alpha/PixArt-Sigma-XL-2-1024-MS",
        pipeline="PixArtSigmaPipeline", transformer="PixArtTransformer2DModel",
        config=dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
                    cross_attention_dim=1152, attention_bias=True, sample_size=128, patch_size=2,
                    activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
                    norm_elementwise_affine=False, norm_eps=1e-6, interpolation_scale=2,
                    use_additional_conditions=False, caption_channels=4096),
        scheduler=_dpm_epsilon,
        # VAE 8x, patch 2: 64 px -> 8 x 8 latents -> 16 tokens
        size=dict(height=64, width=64), latent_tokens=4 * 4,
        caption_dim=4096, guidance=4.5, cfg="batched",
        call_extra=lambda: dict(**_masks(), use_resolution_binning=False, negative_prompt=None)),
    Family(
        # stabilityai/stable-diffusion-3.5-medium, transformer/config.json (MMDiT-X)
        name="sd35_medium", repo="stabilityai/stable-diffusion-3.5-medium",
        pipeline="StableDiffusion3Pipeline", transformer="SD3Transformer2DModel",
        config=dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                    pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=384,
                    dual_attention_layers=tuple(range(13)), qk_norm="rms_norm"),
        scheduler=lambda: flow_match_scheduler(shift=3.0),
        # VAE 8x, patch 2: 64 px -> 8 x 8 latents -> 16 tokens
        size=dict(height=64, width=64), latent_tokens=4 * 4,
        caption_dim=4096, guidance=4.5, cfg="batched", call_extra=_sd3_pooled),
    Family(
        # Efficient-Large-Model/Sana_1600M_1024px_diffusers, transformer/config.json
        name="sana_1600m", repo="Efficient-Large-Model/Sana_1600M_1024px_diffusers",
        pipeline="SanaPipeline", transformer="SanaTransformer2DModel",
        config=dict(in_channels=32, out_channels=32, num_attention_heads=70, attention_head_dim=32, num_layers=20,
                    num_cross_attention_heads=20, cross_attention_head_dim=112, cross_attention_dim=2240,
                    caption_channels=2304, mlp_ratio=2.5, dropout=0.0, attention_bias=False, sample_size=32,
                    patch_size=1, norm_elementwise_affine=False, norm_eps=1e-6),
        scheduler=lambda: _dpm_flow(shift=3.0),
        # DC-AE 32x, patch 1: 128 px -> 4 x 4 latents -> 16 tokens
        size=dict(height=128, width=128), latent_tokens=4 * 4,
        caption_dim=2304, guidance=4.5, cfg="batched",
        call_extra=lambda: dict(**_masks(), use_resolution_binning=False, negative_prompt=None)),
    Family(
        # Lightricks/LTX-Video (0.9.0 / 0.9.1, 2B), transformer/config.json
        name="ltx_video_2b", repo="Lightricks/LTX-Video",
        pipeline="LTXPipeline", transformer="LTXVideoTransformer3DModel",
        config=dict(in_channels=128, out_channels=128, patch_size=1, patch_size_t=1, num_attention_heads=32,
                    attention_head_dim=64, cross_attention_dim=2048, num_layers=28, activation_fn="gelu-approximate",
                    qk_norm="rms_norm_across_heads", norm_elementwise_affine=False, norm_eps=1e-6,
                    caption_channels=4096, attention_bias=True, attention_out_bias=True),
        scheduler=_ltx_flow,
        # VAE 32x spatial / 8x temporal, patch 1: 9 frames, 96 px -> 2 latent frames x 3 x 3 = 18 tokens
        size=dict(height=96, width=96, num_frames=9), latent_tokens=2 * 3 * 3,
        caption_dim=4096, guidance=3.0, cfg="batched", call_extra=_masks),
)}


# -- measuring helpers ----------------------------------------------------------------------------


def output(pipe, kwargs: dict[str, Any]) -> torch.Tensor:
    """One pipeline call's latents as one float tensor."""
    from dit_engine.testing.conformance import run

    return run(pipe, kwargs)


def psnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    """PSNR in dB of ``other`` against ``reference``; the peak is the reference's range (latents
    are not in [0, 1]). Infinite when the two are equal bit for bit."""
    mse = torch.mean((reference.double() - other.double()) ** 2).item()
    peak = (reference.max() - reference.min()).item()
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def twin(pipe):
    """A second pipeline on the same weights, for the variants that cannot be removed (quantized,
    compiled): a copy of the transformer module tree whose parameters and buffers are the
    original's tensors (no memory, no second random initialisation, the same weights as a fresh
    build with the same seed), a fresh scheduler of the same configuration, every other component
    shared. Quantizing or compiling the twin replaces its modules' weights or forwards, never the
    shared tensors, so the original pipeline keeps running plain."""
    transformer = pipe.transformer
    shared = {id(tensor): tensor for tensor in itertools.chain(transformer.parameters(), transformer.buffers())}
    components = dict(pipe.components, transformer=copy.deepcopy(transformer, memo=shared),
                      scheduler=type(pipe.scheduler).from_config(pipe.scheduler.config))
    copied = type(pipe)(**components)
    copied.set_progress_bar_config(disable=True)
    return copied


def self_attention_layers(transformer: torch.nn.Module, adapter) -> int:
    """The attention modules ``parallel=`` shards (every one but the adapter's cross-attention)."""
    import fnmatch

    from dit_engine.adapter import attention_modules

    return sum(1 for name, _ in attention_modules(transformer)
               if not any(fnmatch.fnmatch(name, glob) for glob in adapter.cross_attention_modules))


# -- the Ulysses worker (one rank; see the module docstring) ---------------------------------------


def ulysses_rank(name: str, out_file: str) -> None:
    """Build ``name`` on this rank, run it whole and with ``parallel=ulysses2``; rank 0 writes
    every rank's max abs difference, bytes sent and the volume model's prediction as JSON."""
    import torch.distributed as dist

    import dit_engine
    from dit_engine.parallel.volume import Workload, context_parallel_bytes

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    family = FAMILIES[name]
    pipe = family.build()
    reference = output(pipe, family.call())
    handle = dit_engine.apply(pipe, "parallel=ulysses2")
    parallel = output(pipe, family.call())
    stats = handle.summary()["transforms"]["shard.torch_distributed"]
    transformer = pipe.transformer
    workload = Workload(tokens=family.latent_tokens, hidden=transformer.config.num_attention_heads * transformer.config.attention_head_dim,
                        attention_layers=self_attention_layers(transformer, handle.plan.adapter),
                        output_tokens=family.latent_tokens, output_channels=transformer.proj_out.out_features,
                        batch=family.batch, bytes_per_element=next(transformer.parameters()).element_size())
    calls = STEPS * family.transformer_calls
    result = {"rank": dist.get_rank(), "max_abs": (parallel - reference).abs().max().item(),
              "reference_max_abs": reference.abs().max().item(), "bytes_sent": stats["bytes_sent"],
              "collective_calls": stats["collective_calls"], "predicted_bytes": calls * context_parallel_bytes(workload, ulysses=2),
              "workload": {**workload.__dict__, "calls": calls}, "heads": transformer.config.num_attention_heads}
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, result)
    if dist.get_rank() == 0:
        with open(out_file, "w") as f:
            json.dump(everyone, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    ulysses_rank(sys.argv[1], sys.argv[2])
