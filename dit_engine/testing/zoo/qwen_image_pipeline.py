"""Tiny Qwen-Image pipeline (``diffusers.QwenImagePipeline``): builder, call kwargs and saver.

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
from dit_engine.testing.zoo.tokenizers import tiny_qwen2_tokenizer

__all__ = ["build_tiny_qwen_image_pipeline", "tiny_qwen_image_call_kwargs", "save_tiny_qwen_image_pipeline"]

_QWEN_HIDDEN = 32  # Qwen2.5-VL text hidden size == joint_attention_dim


def _tiny_qwen_text_encoder(tokenizer, hidden: int = _QWEN_HIDDEN):
    """Tiny ``Qwen2_5_VLForConditionalGeneration`` (text and vision towers) matching ``tokenizer``."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    heads = 2
    head_dim = hidden // heads
    # Multimodal RoPE: the (t, h, w) sections must sum to head_dim / 2.
    half = head_dim // 2
    mrope_section = [half - 2 * (half // 3), half // 3, half // 3]
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=2,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=2048,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section},
            bos_token_id=None,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            depth=2,
            hidden_size=16,
            intermediate_size=32,
            num_heads=2,
            out_hidden_size=hidden,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[1],
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    return Qwen2_5_VLForConditionalGeneration(config)


def build_tiny_qwen_image_pipeline(seed: int = 0, num_layers: int = 4):
    """Build a tiny, fully working ``diffusers.QwenImagePipeline`` with seeded random weights.

    Components (all float32, CPU, eval):

    * ``transformer``: ``QwenImageTransformer2DModel`` with ``num_layers`` dual-stream blocks
      (``transformer.transformer_blocks``, default 4), 2 heads x ``attention_head_dim=16``,
      ``axes_dims_rope=(4, 6, 6)``, ``in_channels=64`` (2x2 packing of 16 latent channels),
      ``out_channels=16``, ``patch_size=2``, ``joint_attention_dim=32``, ``guidance_embeds=False``.
    * ``vae``: ``AutoencoderKLQwenImage`` with ``base_dim=8``, ``z_dim=16``, ``dim_mult=[1, 2]``,
      ``temperal_downsample=[False]``: ``vae_scale_factor=2``, so heights and widths must be
      multiples of 4.  ``latents_mean``/``latents_std`` are 0/1.
    * ``text_encoder``: ``Qwen2_5_VLForConditionalGeneration`` (text hidden 32, 2 layers, 2 heads,
      ``mrope_section`` summing to head_dim / 2; a 2-block vision tower that the text-to-image
      pipeline never runs) and ``tokenizer``: :func:`tiny_qwen2_tokenizer`.
    * ``scheduler``: ``FlowMatchEulerDiscreteScheduler`` with Qwen-Image's dynamic-shift config
      (``base_image_seq_len=256``, ``max_image_seq_len=8192``, ``base_shift=0.5``,
      ``max_shift=0.9``, exponential time shift).

    Pitfall: ``QwenImagePipeline`` drops the first ``prompt_template_encode_start_idx = 34`` tokens
    of the templated prompt (the system prompt, which is exactly 34 tokens with the real Qwen
    tokenizer).  A plain character-level tokenizer makes that prefix ~150 tokens, so most of the
    system prompt would leak into the prompt embeddings and ``max_sequence_length`` would cut off the
    user prompt.  :func:`tiny_qwen2_tokenizer` therefore carries BPE merges for exactly the words of
    the template, making the prefix 34 tokens, as with the real tokenizer.
    """
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    if num_layers < 1:
        raise ValueError("num_layers must be >= 1")
    tokenizer = tiny_qwen2_tokenizer()
    z_dim = 16

    with seeded(seed, TRANSFORMER):
        transformer = QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=4 * z_dim,
            out_channels=z_dim,
            num_layers=num_layers,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=_QWEN_HIDDEN,
            guidance_embeds=False,
            axes_dims_rope=(4, 6, 6),
        )
    with seeded(seed, VAE):
        vae = AutoencoderKLQwenImage(
            base_dim=8,
            z_dim=z_dim,
            dim_mult=[1, 2],
            num_res_blocks=1,
            temperal_downsample=[False],
            latents_mean=[0.0] * z_dim,
            latents_std=[1.0] * z_dim,
        )
    with seeded(seed, TEXT_ENCODER):
        text_encoder = _tiny_qwen_text_encoder(tokenizer)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=1.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        shift_terminal=0.02,
        time_shift_type="exponential",
    )
    pipe = QwenImagePipeline(
        scheduler=scheduler,
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        transformer=transformer.eval(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_qwen_image_call_kwargs(**overrides: Any) -> dict[str, Any]:
    """Call kwargs for a fast, deterministic run of :func:`build_tiny_qwen_image_pipeline` pipelines.

    Defaults: ``prompt=TINY_PROMPT``, ``negative_prompt="blurry"``, ``true_cfg_scale=4.0`` (true CFG:
    separate cond and uncond transformer calls, 2 per step; pass ``true_cfg_scale=1.0`` or
    ``negative_prompt=None`` for one call per step), ``height=width=32`` (16x16 latents, 64 packed
    image tokens), ``num_inference_steps=8``, ``max_sequence_length=32``, ``output_type="pt"``
    (``.images`` is ``(1, 3, 32, 32)`` in ``[0, 1]``), ``generator`` seeded with 0.  ``seed=<int>``
    replaces the generator.  Returns a fresh dict (and generator) on every call.
    """
    seed = overrides.pop("seed", 0)
    kwargs: dict[str, Any] = dict(
        prompt=TINY_PROMPT,
        negative_prompt="blurry",
        true_cfg_scale=4.0,
        height=32,
        width=32,
        num_inference_steps=8,
        max_sequence_length=32,
        output_type="pt",
        generator=generator(seed),
    )
    kwargs.update(overrides)
    return kwargs


def save_tiny_qwen_image_pipeline(path: str | Path, seed: int = 0, **build_kwargs: Any) -> Path:
    """Build :func:`build_tiny_qwen_image_pipeline` and ``save_pretrained`` it to ``path``.

    ``diffusers.QwenImagePipeline.from_pretrained(path)`` reloads it offline with identical outputs.
    """
    return save_pipeline(build_tiny_qwen_image_pipeline(seed=seed, **build_kwargs), path)
