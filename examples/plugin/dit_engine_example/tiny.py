"""A tiny, offline, deterministic ``ClassLabelDiTPipeline`` for tests (random weights, 8x8 images)."""

from __future__ import annotations

from pathlib import Path

import torch


def build_tiny_dit_pipeline(seed: int = 0, num_layers: int = 4):
    """A working ``ClassLabelDiTPipeline``: a 4-block DiT transformer, a 2-level KL VAE, DDIM."""
    from diffusers import AutoencoderKL, DDIMScheduler, DiTTransformer2DModel

    from dit_engine_example.pipeline import ClassLabelDiTPipeline

    torch.manual_seed(seed)
    transformer = DiTTransformer2DModel(
        sample_size=4, num_layers=num_layers, patch_size=2, attention_head_dim=8, num_attention_heads=2,
        in_channels=4, out_channels=8, attention_bias=True, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_zero", norm_elementwise_affine=False,
    ).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 8), latent_channels=4,
        norm_num_groups=8, sample_size=8,
    ).eval()
    pipe = ClassLabelDiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_dit_pipeline(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny DiT pipeline with ``save_pretrained`` (for ``model.pretrained=<path>``)."""
    path = Path(path)
    build_tiny_dit_pipeline(seed).save_pretrained(path)
    return path
