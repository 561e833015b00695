"""What the server keeps for later requests: the PNGs of ``response_format=url`` requests
(``GET /v1/images/{id}.png``) and the ``/v1/videos`` jobs with their content, each the newest
``serve.keep_images`` (the oldest forgotten first)."""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future

from dit_engine.serve.validation import Settings


class ImageStore:
    """PNG bytes by image id, the newest ``keep``."""

    def __init__(self, keep: int):
        self.keep = keep
        self._images: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, image_id: str, png: bytes) -> None:
        """Keep ``png`` as ``image_id`` (forgetting the oldest beyond ``keep``)."""
        with self._lock:
            self._images[image_id] = png
            while len(self._images) > self.keep:
                self._images.popitem(last=False)

    def get(self, image_id: str) -> bytes | None:
        """The PNG kept as ``image_id``, or None."""
        with self._lock:
            return self._images.get(image_id)

    def __len__(self) -> int:
        return len(self._images)


class VideoStore:
    """Video jobs by id (OpenAI's video object, updated as the job runs), the newest ``keep``.
    A record's ``_content`` (the animated PNG, once completed) is not part of the object."""

    def __init__(self, keep: int):
        self.keep = keep
        self._videos: OrderedDict[str, dict] = OrderedDict()  # newest last
        self._lock = threading.Lock()

    @staticmethod
    def record(prompt: str, seed: int, settings: Settings, model: str) -> dict:
        """A new video's record, status ``queued``."""
        return {"id": f"video_{uuid.uuid4().hex}", "object": "video", "status": "queued", "progress": 0,
                "created_at": int(time.time()), "completed_at": None, "model": model, "prompt": prompt, "seed": seed,
                "error": None, "size": f"{settings.width}x{settings.height}" if settings.width else None,
                "num_frames": settings.num_frames}

    def add(self, record: dict, future: Future) -> None:
        """Keep ``record``, completed or failed when ``future`` (its job's) is done."""
        with self._lock:
            self._videos[record["id"]] = record
            while len(self._videos) > self.keep:
                self._videos.popitem(last=False)
        future.add_done_callback(lambda done: self._done(record, done))

    def get(self, video_id: str) -> dict | None:
        """The record of ``video_id``, or None."""
        with self._lock:
            return self._videos.get(video_id)

    def pop(self, video_id: str) -> dict | None:
        """Forget ``video_id``; its record, or None."""
        with self._lock:
            return self._videos.pop(video_id, None)

    def _done(self, record: dict, done: Future) -> None:
        with self._lock:
            if done.exception() is not None:
                record.update(status="failed", error={"message": str(done.exception()).splitlines()[0]})
                return
            (frames,), stats = done.result()
            buffer = io.BytesIO()
            frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:], duration=62, loop=0)
            record.update(status="completed", progress=100, completed_at=int(time.time()), dit_engine=stats)
            record["_content"] = buffer.getvalue()
