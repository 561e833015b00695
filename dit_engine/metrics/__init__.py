"""Quality metrics of images against a reference (PSNR, SSIM, MAE) and folder comparison."""

from dit_engine.metrics.quality import ImageScores, compare_images, images_to_tensor, summarize

__all__ = ["ImageScores", "compare_images", "images_to_tensor", "summarize"]
