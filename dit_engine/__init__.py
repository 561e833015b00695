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

from dit_engine.errors import (  # noqa: E402
    AlreadyAppliedError,
    ConfigError,
    DitEngineError,
    PlanError,
    RegistryError,
    UnsupportedPipelineError,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``apply`` and ``Handle`` import torch and diffusers: loaded on first use, so that
    # ``python -m dit_engine --help`` and shell completion start without them.
    if name == "apply":
        from dit_engine.api import apply

        return apply
    if name == "Handle":
        from dit_engine.handle import Handle

        return Handle
    raise AttributeError(f"module 'dit_engine' has no attribute {name!r}")


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
