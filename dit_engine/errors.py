"""Exception types raised by dit_engine.

Every message is one line that says what is wrong and how to fix it; the CLI prints it as
``dit_engine: error: <message>`` and exits with code 2.
"""


class DitEngineError(Exception):
    """Base class of every error dit_engine raises on bad input."""


class ConfigError(DitEngineError):
    """The overrides do not compose into a valid config (unknown option, unknown key, bad type)."""


class RegistryError(DitEngineError):
    """An adapter or transform name is unknown, blocked, or claimed by two distributions."""


class PlanError(DitEngineError):
    """The composed config cannot be compiled into a valid plan for this model."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


class UnsupportedPipelineError(DitEngineError):
    """No installed adapter matches the pipeline given to :func:`dit_engine.apply`."""


class AlreadyAppliedError(DitEngineError):
    """:func:`dit_engine.apply` was called on a pipeline that already carries a plan."""


class IrreversiblePlanError(DitEngineError):
    """``Handle.remove()`` on a plan with a step that cannot be undone (quantize, shard, compile)."""


class NonFiniteOutputError(RuntimeError):
    """A pipeline call produced NaN or infinite values: its images would be flat black, so the run
    (or request) fails instead of reporting success. Not bad input in itself (exit 1 / HTTP 500);
    the message names the likely cause (the guidance scale, a LoRA's weights or scale)."""
