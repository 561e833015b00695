"""What the server keeps for later requests: the PNGs of ``response_format=url`` requests
(``GET /v1/images/{id}.png``) and the ``/v1/videos`` jobs with their content, each the newest
``serve.keep_images`` (the oldest forgotten first).

Both keep their items in a :class:`Kept`: in this process, or, under ``serve.replicas=N``, in the
state the replicas share (:mod:`dit_engine.serve.replicas`), so that a URL or a video id handed out
by one replica is found by whichever replica the next request reaches.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any, Protocol

from dit_engine.serve.validation import Settings


class KeptItems(Protocol):
    """The newest items by key: what :class:`ImageStore` and :class:`VideoStore` keep theirs in."""

    def put(self, key: str, value: Any) -> None: ...
    def get(self, key: str) -> Any: ...
    def pop(self, key: str) -> Any: ...
    def __len__(self) -> int: ...


class Kept:
    """The newest ``keep`` values by key, in this process (thread-safe)."""

    def __init__(self, keep: int):
        self.keep = keep
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: str, value: Any) -> None:
        """Keep ``value`` as ``key`` (newest; forgetting the oldest beyond ``keep``)."""
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.keep:
                self._items.popitem(last=False)

    def get(self, key: str) -> Any:
        """The value kept as ``key``, or None."""
        with self._lock:
            return self._items.get(key)

    def pop(self, key: str) -> Any:
        """Forget ``key``; its value, or None."""
        with self._lock:
            return self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


class ImageStore:
    """PNG bytes by image id, the newest ``keep`` (in ``kept``: this process's own by default)."""

    def __init__(self, keep: int, kept: KeptItems | None = None):
        self._kept = kept if kept is not None else Kept(keep)

    def add(self, image_id: str, png: bytes) -> None:
        """Keep ``png`` as ``image_id`` (forgetting the oldest beyond ``keep``)."""
        self._kept.put(image_id, png)

    def get(self, image_id: str) -> bytes | None:
        """The PNG kept as ``image_id``, or None."""
        return self._kept.get(image_id)

    def __len__(self) -> int:
        return len(self._kept)


class VideoStore:
    """Video jobs by id (OpenAI's video object, updated as the job runs), the newest ``keep`` (in
    ``kept``: this process's own by default). A record's ``_content`` (the animated PNG, once
    completed) is not part of the object."""

    def __init__(self, keep: int, kept: KeptItems | None = None):
        self._kept = kept if kept is not None else Kept(keep)
        self._lock = threading.Lock()  # a record changes in the worker's callbacks

    @staticmethod
    def record(prompt: str, seed: int, settings: Settings, model: str) -> dict:
        """A new video's record, status ``queued``."""
        return {"id": f"video_{uuid.uuid4().hex}", "object": "video", "status": "queued", "progress": 0,
                "created_at": int(time.time()), "completed_at": None, "model": model, "prompt": prompt, "seed": seed,
                "error": None, "size": f"{settings.width}x{settings.height}" if settings.width else None,
                "num_frames": settings.num_frames}

    def add(self, record: dict, future: Future) -> None:
        """Keep ``record``, completed or failed when ``future`` (its job's) is done."""
        self._kept.put(record["id"], record)
        future.add_done_callback(lambda done: self._done(record, done))

    def update(self, record: dict, **changes: Any) -> None:
        """Change ``record`` (kept already) and keep it changed."""
        with self._lock:
            record.update(changes)
            self._kept.put(record["id"], record)

    def get(self, video_id: str) -> dict | None:
        """The record of ``video_id``, or None."""
        return self._kept.get(video_id)

    def pop(self, video_id: str) -> dict | None:
        """Forget ``video_id``; its record, or None."""
        return self._kept.pop(video_id)

    def _done(self, record: dict, done: Future) -> None:
        if done.exception() is not None:
            self.update(record, status="failed", error={"message": str(done.exception()).splitlines()[0]})
            return
        (frames,), stats = done.result()
        buffer = io.BytesIO()
        frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:], duration=62, loop=0)
        self.update(record, status="completed", progress=100, completed_at=int(time.time()), dit_engine=stats,
                    _content=buffer.getvalue())
