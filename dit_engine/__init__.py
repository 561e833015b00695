"""dit_engine: a declarative, Hydra-driven inference engine for diffusers DiT pipelines.

Python use mirrors the CLI overrides::

    import dit_engine
    handle = dit_engine.apply(pipe, "cache=dbcache")
    images = pipe(prompt="a cat").images
    print(handle.summary())
    handle.remove()
"""

from dit_engine.api import apply
from dit_engine.errors import (
    AlreadyAppliedError,
    ConfigError,
    DitEngineError,
    PlanError,
    RegistryError,
    UnsupportedPipelineError,
)
from dit_engine.handle import Handle

__version__ = "0.1.0"

__all__ = [
    "AlreadyAppliedError",
    "ConfigError",
    "DitEngineError",
    "Handle",
    "PlanError",
    "RegistryError",
    "UnsupportedPipelineError",
    "apply",
    "__version__",
]
