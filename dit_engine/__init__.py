"""dit_engine: a declarative, Hydra-driven inference engine for diffusers DiT pipelines.

Python use mirrors the CLI overrides::

    import dit_engine
    handle = dit_engine.apply(pipe, "cache=dbcache")
    images = pipe(prompt="a cat").images
    print(handle.summary())
    handle.remove()
"""

# Before anything imports diffusers: with torchao installed (quant=) and peft (LoRA), importing
# diffusers imports torchao, which logs CUDA kernels it cannot load and torch deprecations that
# say nothing to a dit_engine user; only logging levels change (errors still raise).
from dit_engine.console import quiet_known_noise as _quiet_known_noise

_quiet_known_noise()

from dit_engine.api import apply  # noqa: E402
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
