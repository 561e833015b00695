"""CLIP score of images against their prompts, from a CLIP model on local disk (never downloaded).

CLIPScore = 100 * max(cos(image embedding, text embedding), 0), as torchmetrics defines it;
computed here with transformers directly because torchmetrics only accepts a fixed list of hub
model names, not a local directory.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image


def clip_scores(model_dir: str | Path, images: list[Image.Image], prompts: list[str]) -> list[float]:
    """One CLIP score per (image, prompt) pair, with the CLIP model saved in ``model_dir``."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    processor = CLIPProcessor.from_pretrained(str(model_dir), local_files_only=True)
    inputs = processor(text=list(prompts), images=[image.convert("RGB") for image in images], return_tensors="pt", padding=True)
    with torch.no_grad():
        output = model(**inputs)
    image_embeds = torch.nn.functional.normalize(output.image_embeds, dim=-1)
    text_embeds = torch.nn.functional.normalize(output.text_embeds, dim=-1)
    return (100 * (image_embeds * text_embeds).sum(-1).clamp(min=0)).tolist()
