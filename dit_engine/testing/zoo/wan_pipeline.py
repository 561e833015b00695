"""Tiny Wan 2.1 text-to-video pipeline (``diffusers.WanPipeline``): builder, call kwargs and saver.

See :mod:`dit_engine.testing` for the conventions shared by all tiny pipelines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dit_engine.testing.zoo._build import (
    TINY_PROMPT,
    TEXT_ENCODER,
    TRANSFORMER,
    VAE,
    generator,
    save_pipeline,
    seeded,
)
from dit_engine.testing.zoo.tokenizers import tiny_t5_tokenizer

__all__ = ["build_tiny_wan_pipeline", "tiny_wan_call_kwargs", "save_tiny_wan_pipeline"]

_WAN_TEXT_DIM = 32


def build_tiny_wan_pipeline(seed: int = 0, num_layers: int = 4):
    """Build a tiny, fully working ``diffusers.WanPipeline`` (Wan 2.1 text-to-video) with seeded weights.

    Components (all float32, CPU, eval):

    * ``transformer``: ``WanTransformer3DModel`` with ``num_layers`` blocks (``transformer.blocks``,
      default 4), 2 heads x ``attention_head_dim=16`` (inner dim 32), ``patch_size=(1, 2, 2)``,
      16 in/out channels, ``text_dim=32``, ``ffn_dim=64``, ``rope_max_seq_len=32``; ~74k parameters
      (VAE 22k, UMT5 27k).
    * ``vae``: ``AutoencoderKLWan`` with ``base_dim=4``, ``z_dim=16``, ``dim_mult=[1, 1, 1, 1]`` and the
      real ``temperal_downsample=[False, True, True]``: 8x spatial, 4x temporal compression, exactly
      like Wan 2.1, so heights/widths must be multiples of 16 and ``num_frames = 4k + 1``.
      ``latents_mean``/``latents_std`` are 0/1 (the real statistics are meaningless for random weights).
    * ``text_encoder`` / ``tokenizer``: ``UMT5EncoderModel`` (d_model 32, 2 layers) and the
      character-level :func:`tiny_t5_tokenizer` (saved and reloaded as ``T5Tokenizer``).
    * ``scheduler``: ``UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
      flow_shift=3.0)``, the scheduler shipped with the Wan 2.1 diffusers checkpoints.
    * ``transformer_2=None``, ``boundary_ratio=None`` (Wan 2.1, a single expert).

    With :func:`tiny_wan_call_kwargs` (``guidance_scale=5.0``) the pipeline makes **two separate
    transformer calls per step**, first the conditional one (inside ``transformer.cache_context("cond")``)
    then the unconditional one (``cache_context("uncond")``), like the real Wan 2.1.

    ``ftfy``: ``diffusers.pipelines.wan.pipeline_wan`` imports ``ftfy`` only when it is installed
    and otherwise skips the ``ftfy.fix_text`` prompt clean-up, so ``WanPipeline`` works without it
    and nothing is patched here.  (Other Wan-family pipelines, e.g. I2V/VACE, may reference ``ftfy``
    unconditionally: install ``ftfy`` for those rather than shimming it.)
    """
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    if num_layers < 1:
        raise ValueError("num_layers must be >= 1")
    tokenizer = tiny_t5_tokenizer()
    z_dim = 16

    with seeded(seed, TRANSFORMER):
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=16,
            in_channels=z_dim,
            out_channels=z_dim,
            text_dim=_WAN_TEXT_DIM,
            freq_dim=256,
            ffn_dim=64,
            num_layers=num_layers,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
        )
    with seeded(seed, VAE):
        vae = AutoencoderKLWan(
            base_dim=4,
            z_dim=z_dim,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
            latents_mean=[0.0] * z_dim,
            latents_std=[1.0] * z_dim,
        )
    with seeded(seed, TEXT_ENCODER):
        text_encoder = UMT5EncoderModel(
            UMT5Config(
                vocab_size=len(tokenizer),
                d_model=_WAN_TEXT_DIM,
                d_kv=16,
                d_ff=64,
                num_layers=2,
                num_heads=2,
                relative_attention_num_buckets=8,
                relative_attention_max_distance=32,
                feed_forward_proj="gated-gelu",
                is_encoder_decoder=False,
                use_cache=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        )
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=3.0,
        num_train_timesteps=1000,
    )
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder.eval(),
        vae=vae.eval(),
        scheduler=scheduler,
        transformer=transformer.eval(),
        transformer_2=None,
        boundary_ratio=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_wan_call_kwargs(**overrides: Any) -> dict[str, Any]:
    """Call kwargs for a fast, deterministic run of :func:`build_tiny_wan_pipeline` pipelines.

    Defaults: ``prompt=TINY_PROMPT``, ``negative_prompt="blurry"``, ``height=width=32`` (multiples of
    16), ``num_frames=9`` (3 latent frames; 3 x 2 x 2 = 12 video tokens), ``num_inference_steps=8``,
    ``guidance_scale=5.0`` (> 1: separate cond and uncond transformer calls, 2 per step),
    ``max_sequence_length=32``, ``output_type="pt"`` (``.frames`` is a ``(1, 9, 3, 32, 32)`` tensor
    in ``[0, 1]``), ``generator`` seeded with 0.  ``seed=<int>`` replaces the generator; other
    ``overrides`` replace or add keys.  Returns a fresh dict (and generator) on every call.
    """
    seed = overrides.pop("seed", 0)
    kwargs: dict[str, Any] = dict(
        prompt=TINY_PROMPT,
        negative_prompt="blurry",
        height=32,
        width=32,
        num_frames=9,
        num_inference_steps=8,
        guidance_scale=5.0,
        max_sequence_length=32,
        output_type="pt",
        generator=generator(seed),
    )
    kwargs.update(overrides)
    return kwargs


def save_tiny_wan_pipeline(path: str | Path, seed: int = 0, **build_kwargs: Any) -> Path:
    """Build :func:`build_tiny_wan_pipeline` and ``save_pretrained`` it to ``path`` (returned as ``Path``).

    ``diffusers.WanPipeline.from_pretrained(path)`` reloads it offline with identical outputs.
    """
    return save_pipeline(build_tiny_wan_pipeline(seed=seed, **build_kwargs), path)
