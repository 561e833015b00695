"""What a request asks for, its defaults filled in, checked before it is queued.

:class:`Settings` is what must match for two requests to share a pipeline call.
:class:`RequestValidator` fills in the workload's defaults, checks every field against the
server's limits (``serve.max_steps``...: :class:`~dit_engine.serve.errors.LimitError`, HTTP 422,
so nothing absurd reaches the queue) and against the model like a run's workload
(:class:`~dit_engine.serve.errors.BadRequestError`, HTTP 400), and turns settings into the
workload of a pipeline call.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from dit_engine.errors import DitEngineError
from dit_engine.serve.errors import BadRequestError, LimitError
from dit_engine.serve.loras import LoraStore
from dit_engine.session import Session
from dit_engine.workload import MAX_SEED, Workload


@dataclass(frozen=True)
class Settings:
    """What must match for two requests to share a pipeline call."""

    num_inference_steps: int
    guidance_scale: float
    height: int | None
    width: int | None
    negative_prompt: str | None
    num_frames: int | None = None  # video requests
    lora: tuple[tuple[str, float], ...] = ()  # (adapter name, scale) pairs; none: the base model


def parse_size(size: str | None, max_side: int) -> tuple[int, int] | None:
    """``"WxH"`` as ``(width, height)`` (None for no size or ``"auto"``); a side of more than nine
    digits is refused here, before Python turns it into a number (the limit, ``serve.max_side``,
    is checked with the others)."""
    if size is None or size == "auto":
        return None
    parts = size.lower().split("x")
    digits = [p.lstrip("0") if p.isascii() and p.isdigit() else "" for p in parts]
    if len(parts) != 2 or not all(digits):
        raise BadRequestError(f"size={size!r}: give it as WIDTHxHEIGHT, e.g. 1024x1024")
    if any(len(d) > 9 for d in digits):
        raise LimitError(f"size={size}: each side is at most {max_side} pixels (serve.max_side)")
    return int(digits[0]), int(digits[1])


class RequestValidator:
    """A request's settings and its checks, against ``serve``'s limits, the LoRAs loaded in
    ``loras`` and ``session``'s model and workload."""

    def __init__(self, session: Session, serve: Any, loras: LoraStore):
        self.session = session
        self.serve = serve
        self.loras = loras

    def settings(self, *, steps: int | None, guidance: float | None, size: tuple[int, int] | None,
                 negative_prompt: str | None, num_frames: int | None = None,
                 lora: tuple[tuple[str, float], ...] | None = None) -> Settings:
        """A request's settings, the workload's defaults (and the default LoRA when ``lora`` is
        None; ``()`` asks for none) filled in; checked by :meth:`check`."""
        w = self.session.workload
        height, width = (size[1], size[0]) if size else (w.height, w.width)
        return Settings(steps if steps is not None else w.num_inference_steps,
                        guidance if guidance is not None else w.guidance_scale, height, width, negative_prompt, num_frames,
                        lora if lora is not None else self.loras.default)

    def check_limits(self, prompt: str, settings: Settings, n: int = 1, seed: int = 0) -> None:
        """LimitError (HTTP 422) naming the limit and its setting when a field is out of bounds or
        not a finite number: nothing absurd (10^9 steps, a guidance of 1e308) reaches the queue."""
        serve = self.serve
        if not 1 <= n <= serve.max_images:
            raise LimitError(f"n={n}: ask for 1 to {serve.max_images} images (serve.max_images)")
        if not 0 <= seed <= MAX_SEED - (n - 1):  # image i is seeded seed + i
            raise LimitError(f"seed={seed}: give 0 to {MAX_SEED - (n - 1)}")
        for field_name, text in (("prompt", prompt), ("negative_prompt", settings.negative_prompt or "")):
            if len(text) > serve.max_prompt_chars:
                raise LimitError(f"{field_name} is {len(text)} characters; the limit is {serve.max_prompt_chars} "
                                 "(serve.max_prompt_chars)")
        if not 1 <= settings.num_inference_steps <= serve.max_steps:
            raise LimitError(f"num_inference_steps={settings.num_inference_steps}: ask for 1 to {serve.max_steps} "
                             "(serve.max_steps)")
        guidance = settings.guidance_scale
        if guidance is not None and not (math.isfinite(guidance) and abs(guidance) <= serve.max_guidance_scale):
            raise LimitError(f"guidance_scale={guidance}: give a finite number within ±{serve.max_guidance_scale:g} "
                             "(serve.max_guidance_scale)")
        for side in (settings.width, settings.height):
            if side is not None and side > serve.max_side:
                raise LimitError(f"size={settings.width}x{settings.height}: each side is at most {serve.max_side} pixels "
                                 "(serve.max_side)")
        if settings.num_frames is not None and not 1 <= settings.num_frames <= serve.max_frames:
            raise LimitError(f"num_frames={settings.num_frames}: ask for 1 to {serve.max_frames} (serve.max_frames)")
        if len(settings.lora) > serve.max_loras:
            raise LimitError(f"lora: {len(settings.lora)} adapters; a request combines at most {serve.max_loras} "
                             "(serve.max_loras)")
        for name, scale in settings.lora:
            if not (math.isfinite(scale) and 0 <= scale <= serve.max_lora_scale):
                raise LimitError(f"lora scale={scale}: give a finite number from 0 to {serve.max_lora_scale:g} "
                                 f"(serve.max_lora_scale), for {name!r}")

    def check_defaults(self) -> None:
        """DitEngineError (at startup) when the workload's defaults are outside the limits: a
        request that names no steps, guidance or size gets them, so every such request would be
        refused."""
        try:
            self.check_limits("", self.settings(steps=None, guidance=None, size=None, negative_prompt=None))
        except LimitError as err:
            raise DitEngineError(f"the workload's defaults are outside the server's limits: {err}; "
                                 "raise the setting or change the workload") from None

    def check(self, prompt: str, settings: Settings, n: int = 1, seed: int = 0) -> None:
        """A request's checks before it is queued: the server's limits (LimitError, HTTP 422), its
        LoRA loaded, and the model's own checks of a workload with this prompt and these settings
        (BadRequestError, HTTP 400)."""
        self.check_limits(prompt, settings, n, seed)
        names = [name for name, _ in settings.lora]
        twice = next((name for name in names if names.count(name) > 1), None)
        if twice is not None:
            raise BadRequestError(f"lora {twice!r} is named twice; name each adapter once (give it one scale)")
        unknown = [name for name in names if name not in self.loras.paths]
        if unknown:
            known = ", ".join(self.loras.paths) or "none loaded"
            missing = ", ".join(repr(name) for name in unknown)
            raise BadRequestError(f"lora {missing} {'is' if len(unknown) == 1 else 'are'} not loaded ({known}); "
                                  "load it with POST /v1/loras")
        workload = self.workload(settings, [prompt])
        problems = self.session.adapter.check(self.session.cfg.model, workload, dry_run=True) + workload.problems()
        if problems:
            problem = problems[0]
            if problem.startswith(("workload.height", "workload.width")):  # say it in the request's terms
                problem = f"size={settings.width}x{settings.height} cannot be generated: {problem.split(': ', 1)[-1]}"
            raise BadRequestError(problem)

    def workload(self, settings: Settings, prompts: list[str]) -> Workload:
        """The session's workload with ``prompts`` and ``settings``: one pipeline call's."""
        w = self.session.workload
        call_kwargs = dict(w.call_kwargs)
        if settings.negative_prompt is not None:
            call_kwargs["negative_prompt"] = [settings.negative_prompt] * len(prompts)
        if settings.num_frames is not None:
            call_kwargs["num_frames"] = settings.num_frames
        return dataclasses.replace(w, prompts=prompts, num_inference_steps=settings.num_inference_steps,
                                   guidance_scale=settings.guidance_scale, height=settings.height,
                                   width=settings.width, call_kwargs=call_kwargs)
