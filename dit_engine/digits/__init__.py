"""The embedded digits model (``model=tiny``): a class-conditional Flux-architecture DiT for 16x16 digits.

Trained on scikit-learn's bundled digits dataset (offline), it gives the engine a
real, fast diffusers pipeline whose outputs mean something::

    from dit_engine.digits import load_digits_pipeline

    pipe = load_digits_pipeline()
    images = pipe(["three", "seven"], generator=torch.Generator().manual_seed(0)).images

See ``README.md`` in this folder for the architecture and how to retrain it.
"""

from .conditioner import ClassConditioner, UnknownPromptError
from .model import CLASS_NAMES, load_digits_pipeline
from .pipeline import TinyDiTPipeline
from .vae import PixelShuffleVAE

__all__ = [
    "CLASS_NAMES",
    "ClassConditioner",
    "PixelShuffleVAE",
    "TinyDiTPipeline",
    "UnknownPromptError",
    "load_digits_pipeline",
]
