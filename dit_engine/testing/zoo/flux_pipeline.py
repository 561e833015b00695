"""Tiny FLUX.1 pipeline (``diffusers.FluxPipeline``): builder, call kwargs and saver.

See :mod:`dit_engine.testing` for the conventions shared by all tiny pipelines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dit_engine.testing.zoo._build import (
    TINY_PROMPT,
    TEXT_ENCODER,
    TEXT_ENCODER_2,
    TRANSFORMER,
    VAE,
    generator,
    save_pipeline,
    seeded,
)
from dit_engine.testing.zoo.tokenizers import tiny_clip_tokenizer, tiny_t5_tokenizer

__all__ = ["build_tiny_flux_pipeline", "tiny_flux_call_kwargs", "save_tiny_flux_pipeline"]

_FLUX_HIDDEN = 32  # text-encoder width == joint_attention_dim == pooled_projection_dim
_FLUX_LATENT_CHANNELS = 16  # like FLUX.1; the transformer sees 4 * 16 = 64 packed channels


def build_tiny_flux_pipeline(
    seed: int = 0,
    num_layers: int = 2,
    num_single_layers: int = 4,
    *,
    guidance_embeds: bool = True,
):
    """Build a tiny, fully working ``diffusers.FluxPipeline`` with seeded random weights.

    Components (all float32, CPU, eval):

    * ``transformer``: ``FluxTransformer2DModel`` with ``num_layers`` double-stream blocks
      (``transformer.transformer_blocks``) and ``num_single_layers`` single-stream blocks
      (``transformer.single_transformer_blocks``); 2 heads x ``attention_head_dim=16`` (inner
      dim 32), ``axes_dims_rope=(4, 6, 6)`` (sums to the head dim, each even), ``in_channels=64``
      (``patch_size=1``: 2x2 packing of 16 latent channels), ``joint_attention_dim=32``,
      ``pooled_projection_dim=32``, ``guidance_embeds=True`` by default (FLUX.1-dev style:
      ``guidance_scale`` is fed to the transformer as an embedding, one transformer call per step).
      With ``guidance_embeds=False`` (FLUX.1-schnell style) ``guidance_scale`` is ignored.
      About 167k parameters with the defaults (VAE 49k, CLIP 36k, T5 27k).
    * ``vae``: ``AutoencoderKL`` with ``block_out_channels=(8, 16)`` (so ``vae_scale_factor=2``),
      16 latent channels, no quant convs and FLUX.1's ``scaling_factor``/``shift_factor``.
      Heights and widths must be multiples of ``vae_scale_factor * 2 = 4``.
    * ``text_encoder`` / ``tokenizer``: ``CLIPTextModel`` (hidden 32, 2 layers, 77 positions) and
      :func:`tiny_clip_tokenizer`; it supplies the 32-d pooled prompt embedding.
    * ``text_encoder_2`` / ``tokenizer_2``: ``T5EncoderModel`` (d_model 32, 2 layers) and
      :func:`tiny_t5_tokenizer`; it supplies the token-level prompt embeddings.
    * ``scheduler``: ``FlowMatchEulerDiscreteScheduler`` with FLUX.1-dev's dynamic shifting config.

    With :func:`tiny_flux_call_kwargs` (32x32 pixels -> 16x16 latents -> 64 image tokens, 32 text
    tokens, 8 steps) one call takes tens of milliseconds on a CPU.

    Pitfalls: ``FluxPipeline`` derives ``num_channels_latents`` from ``transformer.in_channels // 4``,
    so the VAE's ``latent_channels`` must be exactly a quarter of it; the RoPE axes must sum to
    ``attention_head_dim``; the CLIP text encoder's ``eos_token_id`` must match the tokenizer's.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    if num_layers < 0 or num_single_layers < 0:
        raise ValueError("num_layers and num_single_layers must be >= 0")

    tokenizer = tiny_clip_tokenizer()
    tokenizer_2 = tiny_t5_tokenizer()

    with seeded(seed, TRANSFORMER):
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=4 * _FLUX_LATENT_CHANNELS,
            num_layers=num_layers,
            num_single_layers=num_single_layers,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=_FLUX_HIDDEN,
            pooled_projection_dim=_FLUX_HIDDEN,
            guidance_embeds=guidance_embeds,
            axes_dims_rope=(4, 6, 6),
        )
    with seeded(seed, VAE):
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(8, 16),
            layers_per_block=1,
            latent_channels=_FLUX_LATENT_CHANNELS,
            norm_num_groups=4,
            sample_size=32,
            use_quant_conv=False,
            use_post_quant_conv=False,
            scaling_factor=0.3611,
            shift_factor=0.1159,
        )
    with seeded(seed, TEXT_ENCODER):
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=_FLUX_HIDDEN,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                max_position_embeddings=tokenizer.model_max_length,
                projection_dim=_FLUX_HIDDEN,
                hidden_act="quick_gelu",
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    with seeded(seed, TEXT_ENCODER_2):
        text_encoder_2 = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_2),
                d_model=_FLUX_HIDDEN,
                d_kv=16,
                d_ff=64,
                num_layers=2,
                num_heads=2,
                relative_attention_num_buckets=8,
                relative_attention_max_distance=32,
                feed_forward_proj="gated-gelu",
                is_encoder_decoder=False,
                use_cache=False,
                pad_token_id=tokenizer_2.pad_token_id,
                eos_token_id=tokenizer_2.eos_token_id,
            )
        )
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=tokenizer_2,
        transformer=transformer.eval(),
        image_encoder=None,
        feature_extractor=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_flux_call_kwargs(**overrides: Any) -> dict[str, Any]:
    """Call kwargs for a fast, deterministic run of :func:`build_tiny_flux_pipeline` pipelines.

    Defaults: ``prompt=TINY_PROMPT``, ``height=width=32`` (multiples of 4 are required; 32 px gives
    16x16 latents, i.e. 64 packed image tokens), ``num_inference_steps=8``, ``guidance_scale=3.5``,
    ``max_sequence_length=32`` (T5 tokens fed to the transformer), ``output_type="pt"`` (images are
    a ``(1, 3, H, W)`` float tensor in ``[0, 1]``) and ``generator`` seeded with 0.

    ``overrides`` replace or add keys; ``seed=<int>`` is accepted as a shorthand that replaces the
    generator with one seeded from it.  A fresh dict (and generator) is returned on every call: do
    not reuse one dict for two runs.  For separate cond/uncond transformer calls per step pass
    ``negative_prompt="..."`` and ``true_cfg_scale > 1``.
    """
    seed = overrides.pop("seed", 0)
    kwargs: dict[str, Any] = dict(
        prompt=TINY_PROMPT,
        height=32,
        width=32,
        num_inference_steps=8,
        guidance_scale=3.5,
        max_sequence_length=32,
        output_type="pt",
        generator=generator(seed),
    )
    kwargs.update(overrides)
    return kwargs


def save_tiny_flux_pipeline(path: str | Path, seed: int = 0, **build_kwargs: Any) -> Path:
    """Build :func:`build_tiny_flux_pipeline` (``seed``, ``build_kwargs``) and ``save_pretrained`` it.

    Returns ``path`` as a ``Path``.  ``diffusers.FluxPipeline.from_pretrained(path)`` reloads it
    offline (``HF_HUB_OFFLINE=1``) with identical weights, tokenizers and scheduler, about 1 MB on
    disk.
    """
    return save_pipeline(build_tiny_flux_pipeline(seed=seed, **build_kwargs), path)
