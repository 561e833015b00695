"""Architecture, component construction and weight loading for the tiny digits model.

The shipped model lives next to this file:

* ``weights/tiny_dit.safetensors`` — transformer and conditioner tensors, keys
  prefixed ``transformer.`` / ``conditioner.`` (the VAE has no weights).
* ``weights/tiny_dit.json`` — everything needed to rebuild the components
  (transformer / conditioner / VAE / scheduler configs, class names, image size)
  plus training metadata.

Both are written by ``python -m dit_engine.digits.train``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from safetensors.torch import load_file

from dit_engine.config.schema import EMBEDDED_PROMPTS

from .conditioner import ClassConditioner
from .pipeline import TinyDiTPipeline
from .vae import PixelShuffleVAE

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_CONFIG",
    "RETRAIN_COMMAND",
    "WEIGHTS_DIR",
    "WEIGHTS_FILE",
    "CONFIG_FILE",
    "build_components",
    "load_digits_config",
    "load_digits_pipeline",
]

#: The prompts the model understands, in label order (label ``i`` = digit ``i``).
CLASS_NAMES: tuple[str, ...] = EMBEDDED_PROMPTS  # the config checks know them without torch

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_FILE = WEIGHTS_DIR / "tiny_dit.safetensors"
CONFIG_FILE = WEIGHTS_DIR / "tiny_dit.json"
RETRAIN_COMMAND = "python -m dit_engine.digits.train"

#: The architecture the trainer uses. The shipped JSON is the source of truth at load
#: time; this dict only seeds new training runs.
DEFAULT_CONFIG: dict[str, Any] = {
    "sample_size": 16,
    "class_names": list(CLASS_NAMES),
    "transformer": {
        "patch_size": 1,
        # 4 latent channels (2x2 pixel-unshuffle) x 4 (2x2 Flux token packing).
        "in_channels": 16,
        "num_layers": 4,
        "num_single_layers": 8,
        "attention_head_dim": 24,
        "num_attention_heads": 4,
        "joint_attention_dim": 64,
        "pooled_projection_dim": 64,
        "guidance_embeds": False,
        # Sums to attention_head_dim; axis 0 is the (always zero) text/image axis,
        # axes 1 and 2 are the token row and column.
        "axes_dims_rope": [8, 8, 8],
    },
    "conditioner": {"num_tokens": 4, "token_dim": 64, "pooled_dim": 64},
    "vae": {"factor": 2},
    # Trained on unshifted sigmas in (0, 1) (logit-normal), so sample without a shift.
    "scheduler": {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False},
}


def load_digits_config(path: str | Path = CONFIG_FILE) -> dict[str, Any]:
    """Read the model JSON (architecture + training metadata)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"tiny model config not found at {path}; regenerate the weights with `{RETRAIN_COMMAND}`"
        )
    return json.loads(path.read_text())


def build_components(config: dict[str, Any]) -> dict[str, Any]:
    """Instantiate (untrained) pipeline components from a model config dict.

    Returns a dict with keys ``transformer``, ``scheduler``, ``vae``, ``conditioner``
    and ``sample_size``, i.e. the keyword arguments of :class:`TinyDiTPipeline`.
    """
    config = copy.deepcopy(config)
    transformer_cfg = config["transformer"]
    transformer_cfg["axes_dims_rope"] = tuple(transformer_cfg["axes_dims_rope"])
    return {
        "transformer": FluxTransformer2DModel(**transformer_cfg),
        "scheduler": FlowMatchEulerDiscreteScheduler(**config["scheduler"]),
        "vae": PixelShuffleVAE(**config["vae"]),
        "conditioner": ClassConditioner(class_names=config["class_names"], **config["conditioner"]),
        "sample_size": config["sample_size"],
    }


def load_digits_pipeline(
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    weights_dir: str | Path | None = None,
) -> TinyDiTPipeline:
    """Build the tiny digits pipeline and load its trained weights.

    Args:
        device: Device to put the pipeline on.
        dtype: Compute dtype; the stored (half-precision) weights are cast to it.
        weights_dir: Folder holding ``tiny_dit.safetensors`` and ``tiny_dit.json``
            (defaults to the weights shipped with the package).

    Raises:
        FileNotFoundError: If the weights or config are missing (the message names
            the retrain command).
    """
    weights_dir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    weights_file = weights_dir / WEIGHTS_FILE.name
    if not weights_file.is_file():
        raise FileNotFoundError(
            f"tiny model weights not found at {weights_file}; regenerate them with `{RETRAIN_COMMAND}`"
        )
    config = load_digits_config(weights_dir / CONFIG_FILE.name)
    components = build_components(config)

    # safetensors never unpickles, so loading shipped weights cannot execute code.
    state = load_file(str(weights_file))
    for name in ("transformer", "conditioner"):
        prefix = f"{name}."
        module_state = {k[len(prefix) :]: v.float() for k, v in state.items() if k.startswith(prefix)}
        components[name].load_state_dict(module_state, strict=True)

    for name in ("transformer", "conditioner", "vae"):
        # ``torch.nn.Module.to`` rather than ``ModelMixin.to``: diffusers 0.42 logs a
        # spurious "should be kept in float32: []" warning on every dtype cast.
        torch.nn.Module.to(components[name], device=device, dtype=dtype).eval()
    return TinyDiTPipeline(**components)
