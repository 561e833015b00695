"""A parameter-free, exactly invertible "VAE" for the tiny digits model.

Real latent-diffusion pipelines run the transformer in the latent space of an
autoencoder. The tiny model keeps that structure (so the engine sees the same
``encode -> transformer -> decode`` flow as in Flux) but replaces the learned
autoencoder with a lossless space-to-depth rearrangement: a ``factor x factor``
block of pixels becomes ``factor**2`` latent channels. There is nothing to
train, and ``decode(encode(x)) == x`` for every ``x`` in ``[0, 1]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

__all__ = ["PixelShuffleVAE"]


class PixelShuffleVAE(ModelMixin, ConfigMixin):
    """Lossless pixel-(un)shuffle autoencoder for single-channel images.

    Args:
        factor: Spatial down-sampling factor. An image of shape ``(B, 1, H, W)``
            becomes latents of shape ``(B, factor**2, H / factor, W / factor)``.

    Attributes:
        scale_factor: Same as ``factor``; the pixel-to-latent spatial ratio
            (what diffusers pipelines call ``vae_scale_factor``).
        latent_channels: Number of latent channels, ``factor**2``.
    """

    @register_to_config
    def __init__(self, factor: int = 2):
        super().__init__()
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.scale_factor = factor
        self.latent_channels = factor**2
        # The module has no parameters, but diffusers derives a module's (and a
        # pipeline's) ``device``/``dtype`` from its first parameter or buffer and
        # fails on a module with neither. An empty, non-persistent buffer follows
        # ``.to()`` and never appears in a state dict.
        self.register_buffer("_device_anchor", torch.zeros(0), persistent=False)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Map images in ``[0, 1]`` of shape ``(B, 1, H, W)`` to latents in ``[-1, 1]``.

        ``H`` and ``W`` must be divisible by ``factor``.
        """
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"expected images of shape (B, 1, H, W), got {tuple(images.shape)}")
        return F.pixel_unshuffle(images * 2 - 1, self.scale_factor)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Map latents of shape ``(B, factor**2, h, w)`` back to images in ``[0, 1]``.

        The output is clamped because sampled latents can overshoot ``[-1, 1]``.
        """
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"expected latents of shape (B, {self.latent_channels}, h, w), got {tuple(latents.shape)}"
            )
        return ((F.pixel_shuffle(latents, self.scale_factor) + 1) / 2).clamp(0, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Round-trip ``decode(encode(images))``; provided so the module is callable."""
        return self.decode(self.encode(images))
