"""Engine-owned step state: which request, which denoising step, which CFG branch.

Pipelines never have to open a cache context. The request starts when the scheduler's
``set_timesteps`` runs, a step ends when ``scheduler.step`` returns, and the k-th call of one
transformer inside a step is CFG branch k (pipelines with separate cond/uncond forwards make two
calls per step; batched CFG makes one). Caches key their state by (transformer, branch) and
subscribe to :meth:`StepState.on_request` to reset.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class StepState:
    """Mutable step counters shared by the hooks of one applied plan."""

    request: int = 0
    num_steps: int = 0
    #: the noise level of each step in [0, 1] (the scheduler's sigmas; timesteps / 1000 for
    #: schedulers without them), or None when unknown
    sigmas: list[float] | None = None
    step: int = 0
    transformer: str = ""
    branch: int = 0
    in_request: bool = False
    calls_in_step: dict[str, int] = field(default_factory=dict)
    calls_total: dict[str, int] = field(default_factory=dict)
    step_times: list[float] = field(default_factory=list)
    _step_started: float = 0.0
    _request_listeners: list[Callable[[], None]] = field(default_factory=list)
    _step_listeners: list[Callable[[], None]] = field(default_factory=list)

    def on_request(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` at the start of every request (caches reset their state there)."""
        self._request_listeners.append(listener)

    def before_step(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` before every ``scheduler.step`` reads the model output (CFG parallel
        fills a deferred branch there)."""
        self._step_listeners.append(listener)

    def step_starts(self) -> None:
        """``scheduler.step`` is about to run."""
        for listener in self._step_listeners:
            listener()

    @property
    def sigma(self) -> float | None:
        """The noise level of the current step in [0, 1], or None when unknown."""
        sigmas = self.sigmas
        return sigmas[self.step] if sigmas is not None and self.step < len(sigmas) else None

    def start_request(self, num_steps: int = 0, sigmas: list[float] | None = None) -> None:
        """A new request of ``num_steps`` denoising steps (0 when unknown) starts; ``sigmas``:
        each step's noise level in [0, 1] when the scheduler says."""
        self.request += 1
        self.num_steps = num_steps
        self.sigmas = sigmas
        self.step = 0
        self.in_request = True
        self.calls_in_step.clear()
        self._step_started = time.perf_counter()
        for listener in self._request_listeners:
            listener()

    def begin_call(self, transformer: str) -> None:
        """A transformer forward starts: set the branch index for the hooks below it."""
        if not self.in_request:
            # Called outside a pipeline (no set_timesteps seen): every call is its own request.
            self.start_request()
            self.in_request = False
        self.transformer = transformer
        self.branch = self.calls_in_step.get(transformer, 0)
        self.calls_in_step[transformer] = self.branch + 1
        self.calls_total[transformer] = self.calls_total.get(transformer, 0) + 1

    def end_step(self) -> None:
        now = time.perf_counter()
        self.step_times.append(now - self._step_started)
        self._step_started = now
        self.step += 1
        self.calls_in_step.clear()

    def reset_stats(self) -> None:
        self.calls_total.clear()
        self.step_times.clear()
