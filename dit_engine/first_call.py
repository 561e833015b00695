"""``dit_engine.apply(pipe, "model=auto", ...)`` without ``example_call``: the plan is completed on
the pipeline's first real call.

The automatic adapter infers the block lists from one traced call, and the only call sure to fit a
pipeline is the one its user makes. So :func:`dit_engine.apply` returns a :class:`FirstCallHandle`
and the pipeline's next call is intercepted once: its arguments are traced (two steps, latents
out, callbacks dropped, generators cloned so the user's own draw the same numbers), the plan is
compiled and applied, and then the call runs as asked, with the plan. A trace that fails raises
its one-line error from that call, and the next call tries again: the pipeline never runs
unaccelerated while the user believes otherwise.

The interception swaps the pipeline object's class for a subclass whose ``__call__`` does the above
and puts the original class back first thing (``pipe(...)`` looks ``__call__`` up on the class, so
an instance attribute would not be seen); :meth:`FirstCallHandle.remove` before the first call
puts it back too.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from dit_engine.errors import DitEngineError
from dit_engine.handle import Handle

#: set on the intercepting class: a pipeline waiting for its first call already has a plan
INTERCEPTED = "_dit_engine_first_call"
#: pipeline-call arguments the traced call leaves out: user code that must run once per real call
NOT_TRACED = ("callback", "callback_steps", "callback_on_step_end", "callback_on_step_end_tensor_inputs")


def waiting_for_first_call(pipe: Any) -> bool:
    """Whether ``pipe`` carries a ``model=auto`` plan that its next call completes."""
    return bool(getattr(type(pipe), INTERCEPTED, False))


class FirstCallHandle:
    """The handle of a ``model=auto`` plan completed on the pipeline's first call (module doc).

    Before that call, :meth:`remove` undoes the interception and everything else says to call the
    pipeline first; after it, this is the :class:`~dit_engine.handle.Handle` of the applied plan.
    """

    def __init__(self, pipe: Any, complete):
        """``complete(example_call) -> Handle``: prepares the session with that call traced and
        applies the plan (:func:`dit_engine.apply`'s own path)."""
        self._pipe = pipe
        self._complete = complete
        self._handle: Handle | None = None
        self._original = type(pipe)
        self._intercept()

    def _intercept(self) -> None:
        original, owner = self._original, self

        def __call__(pipe, *args, **kwargs):
            pipe.__class__ = original  # one shot: the pipeline is itself again, whatever happens next
            owner._complete_from(args, kwargs)
            return original.__call__(pipe, *args, **kwargs)

        namespace = {"__call__": __call__, "__module__": original.__module__, "__qualname__": original.__qualname__,
                     "__doc__": original.__doc__, INTERCEPTED: True}
        self._pipe.__class__ = type(original.__name__, (original,), namespace)

    def _complete_from(self, args: tuple, kwargs: dict) -> None:
        try:
            self._handle = self._complete(traced_call(self._original, self._pipe, args, kwargs))
        except BaseException:
            self._intercept()  # the next call tries again rather than running without the plan
            raise

    @property
    def completed(self) -> bool:
        """Whether the first call has traced the pipeline and the plan is applied."""
        return self._handle is not None

    def remove(self) -> None:
        """Undo the plan (after the first call) or the interception (before it)."""
        if self._handle is not None:
            self._handle.remove()
        elif type(self._pipe) is not self._original:
            self._pipe.__class__ = self._original

    def __getattr__(self, name: str) -> Any:
        handle = self.__dict__.get("_handle")
        if handle is None:
            raise DitEngineError(
                f"handle.{name}: the model=auto plan is completed on the pipeline's first call (its blocks are traced "
                "from that call's arguments); call the pipeline once, or pass apply(..., example_call={...})")
        return getattr(handle, name)


def traced_call(pipeline_class: type, pipe: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The user's call as keyword arguments for the trace: positional ones named, callbacks left
    out, generators cloned (the trace must not advance the user's), latents out where accepted."""
    signature = inspect.signature(pipeline_class.__call__)
    try:
        bound = signature.bind(pipe, *args, **kwargs)
    except TypeError as err:
        raise DitEngineError(f"{pipeline_class.__name__}(...) rejects these arguments: {err}") from None
    call: dict[str, Any] = {}
    for name, value in list(bound.arguments.items())[1:]:  # [0] is the pipeline itself
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            call.update(value)
        else:
            call[name] = value
    call = {key: value for key, value in call.items() if key not in NOT_TRACED}
    if "generator" in call:
        call["generator"] = _clone_generators(call["generator"])
    if "output_type" in signature.parameters:
        call["output_type"] = "latent"  # the trace needs the transformer's calls, not the decoded image
    return call


def _clone_generators(generator: Any) -> Any:
    if isinstance(generator, torch.Generator):
        clone = torch.Generator(device=generator.device)
        clone.set_state(generator.get_state())
        return clone
    if isinstance(generator, (list, tuple)):
        return type(generator)(_clone_generators(g) for g in generator)
    return generator
