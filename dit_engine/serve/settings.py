"""The startup check of every ``serve.*`` key (:class:`~dit_engine.config.schema.ServeConfig`).

Hydra's schema checks the types; this checks the values, before the model is loaded, so that a
setting that would silently weaken the server (``serve.max_queue=0``: an unbounded queue; an empty
``serve.api_key``: no authentication) or crash it later (``serve.port=99999``) is one line naming
the fix and exit code 2.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from typing import Any

from dit_engine.lora import MAX_LORA_SCALE
from dit_engine.workload import MAX_GUIDANCE_SCALE

#: keys that must be whole numbers of at least 1
_AT_LEAST_ONE = ("max_queue", "max_batch", "max_images", "keep_images", "max_steps", "max_side", "max_frames",
                 "max_prompt_chars", "max_connections", "max_loras", "replicas")
#: keys that must be finite numbers above 0
_POSITIVE = ("max_body_mb", "max_lora_scale", "request_timeout_s", "header_timeout_s", "keep_alive_s")


def serve_problems(serve: Any) -> list[str]:
    """What is wrong with the ``serve`` settings, each a one-line fix (empty when they are fine)."""
    problems = []
    if not 1 <= serve.port <= 65535:
        problems.append(f"serve.port={serve.port}: give a TCP port from 1 to 65535")
    problems.extend(_host_problems(serve.host))
    if serve.api_key is not None and not serve.api_key.strip():
        problems.append("serve.api_key is empty: unset it (serve.api_key=null, no authentication) or give a key")
    for key in _AT_LEAST_ONE:
        if getattr(serve, key) < 1:
            problems.append(f"serve.{key}={getattr(serve, key)}: use 1 or more")
    for key in _POSITIVE:
        value = getattr(serve, key)
        if not (math.isfinite(value) and value > 0):
            problems.append(f"serve.{key}={value}: use a finite number above 0")
    if serve.batch_wait_ms < 0:
        problems.append(f"serve.batch_wait_ms={serve.batch_wait_ms}: use 0 or more")
    guidance = serve.max_guidance_scale
    if not (math.isfinite(guidance) and 0 < guidance <= MAX_GUIDANCE_SCALE):
        problems.append(f"serve.max_guidance_scale={guidance}: use a number above 0 and at most {MAX_GUIDANCE_SCALE:g} "
                        "(far beyond, images overflow to NaN)")
    if serve.max_lora_scale > MAX_LORA_SCALE:  # (finite and above 0: _POSITIVE)
        problems.append(f"serve.max_lora_scale={serve.max_lora_scale}: use at most {MAX_LORA_SCALE:g}, the bound a run's "
                        "lora.scale has (far beyond, a LoRA's delta swamps the weights and images overflow to NaN)")
    for folder in serve.lora_dirs:
        if not Path(os.path.expanduser(folder)).is_dir():
            problems.append(f"serve.lora_dirs: {folder} is not a directory; list existing directories "
                            "(or [] for no LoRA loading)")
    return problems


def _host_problems(host: str) -> list[str]:
    if not host:
        return ["serve.host is empty: give an address to listen on, e.g. 127.0.0.1 or 0.0.0.0"]
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return [f"serve.host={host} does not resolve to an address; give one to listen on, e.g. 127.0.0.1 or 0.0.0.0"]
    return []


def per_sample_session(args: list[str]) -> Any:
    """The server's session: ``args``, with ``cache.per_sample=true`` added when the cache keeps
    per-sample state and the plan allows it (a data-driven block cache without parallel=...), so
    its requests batch and every image equals the same request served alone. An explicit
    ``cache.per_sample=...`` in ``args`` is kept as given."""
    from dit_engine.errors import PlanError
    from dit_engine.session import Session

    session = Session.from_overrides(args)
    cache = session.cfg.get("cache")
    if cache is None or cache.get("name") in (None, "none") or "per_sample" not in cache or any(a.lstrip("+").startswith("cache.per_sample=") for a in args):
        return session
    overrides = [*args, "cache.per_sample=true"]
    try:
        Session.from_overrides(overrides).prepare()  # the plan's checks only: nothing is loaded
    except PlanError as err:
        if "cache.per_sample" in str(err):
            return session  # this cache or plan cannot decide per sample: one request per call
        raise
    return Session.from_overrides(overrides)
