"""PSNR, SSIM and MAE of images against reference images, via torchmetrics.

Images are compared as the user sees them: 8-bit RGB (PIL images or PNG files) scaled to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image


@dataclass
class ImageScores:
    """Scores of one image against its reference (PSNR in dB, inf when identical)."""

    name: str
    psnr: float
    ssim: float
    mae: float

    def as_dict(self) -> dict:
        return asdict(self)


def images_to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """PIL images -> float tensor (N, 3, H, W) in [0, 1]."""
    arrays = [np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0 for image in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _ssim_kernel(height: int, width: int) -> int:
    # torchmetrics' default 11x11 window does not fit tiny images; use the largest odd size that does.
    size = min(11, height, width)
    return size if size % 2 == 1 else size - 1


def score_pair(name: str, reference: torch.Tensor, image: torch.Tensor) -> ImageScores:
    """Scores of one (3, H, W) image in [0, 1] against its reference."""
    if reference.shape != image.shape:
        raise ValueError(f"{name}: image size {tuple(image.shape)} differs from the reference's {tuple(reference.shape)}")
    # imported here: torchmetrics takes seconds to import (its text metrics), and a run that stops
    # at a config error, or measures no quality, never needs it
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    mse = torch.mean((reference - image) ** 2).item()
    psnr = math.inf if mse == 0 else float(peak_signal_noise_ratio(image[None], reference[None], data_range=1.0))
    kernel = _ssim_kernel(*reference.shape[-2:])
    ssim = float(structural_similarity_index_measure(image[None], reference[None], data_range=1.0, kernel_size=kernel))
    mae = torch.mean(torch.abs(reference - image)).item()
    return ImageScores(name=name, psnr=psnr, ssim=ssim, mae=mae)


def compare_images(names: list[str], references: list[Image.Image], images: list[Image.Image]) -> list[ImageScores]:
    """Per-image scores of ``images`` against ``references`` (same order and sizes)."""
    if len(references) != len(images):
        raise ValueError(f"{len(images)} images but {len(references)} references")
    reference_tensor, image_tensor = images_to_tensor(references), images_to_tensor(images)
    return [score_pair(name, r, i) for name, r, i in zip(names, reference_tensor, image_tensor)]


def summarize(scores: list[ImageScores]) -> dict[str, float]:
    """Mean PSNR (finite values; inf if all identical), worst PSNR, mean SSIM and MAE."""
    finite = [s.psnr for s in scores if math.isfinite(s.psnr)]
    return {
        "psnr": sum(finite) / len(finite) if finite else math.inf,
        "psnr_min": min(s.psnr for s in scores),
        "ssim": sum(s.ssim for s in scores) / len(scores),
        "mae": sum(s.mae for s in scores) / len(scores),
        "identical": sum(1 for s in scores if s.psnr == math.inf),
        "images": len(scores),
    }
