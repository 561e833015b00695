"""dit_engine: a declarative, Hydra-driven inference engine for diffusers DiT pipelines.

Python use mirrors the CLI overrides::

    import dit_engine
    handle = dit_engine.apply(pipe, "cache=dbcache")
    images = pipe(prompt="a cat").images
    print(handle.summary())
    handle.remove()
"""

# Other libraries' logging is left as it is: the command-line entry points quiet what says nothing
# to their users (dit_engine.console.quiet_known_noise).
from dit_engine.errors import (
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
