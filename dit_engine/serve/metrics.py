"""The server's counters, for ``GET /metrics`` (Prometheus text). Thread-safe: the worker and the
HTTP handlers update them concurrently. Under ``serve.replicas=N`` each replica counts its own and
``/metrics`` answers their sum (:meth:`Metrics.snapshot`, :meth:`Metrics.merged`)."""

from __future__ import annotations

import threading


class Metrics:
    """Requests by outcome, images generated, the latency histogram and the cache's work saved.

    Attributes:
        requests: requests by outcome (``ok``, ``bad_request``, ``rejected``, ``error``,
            ``timeout``, ``cancelled``).
        images: images generated.
    """

    latency_buckets = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

    def __init__(self):
        self.requests: dict[str, int] = {"ok": 0, "bad_request": 0, "rejected": 0, "error": 0, "timeout": 0, "cancelled": 0}
        self.images = 0
        self.latency_counts = [0] * (len(self.latency_buckets) + 1)
        self.latency_sum = 0.0
        self.blocks_computed = 0
        self.blocks_total = 0
        self.steps_cached = 0
        self.steps_total = 0
        self._lock = threading.Lock()

    def count(self, status: str) -> None:
        """One more request with outcome ``status``."""
        with self._lock:
            self.requests[status] = self.requests.get(status, 0) + 1

    def observe(self, seconds: float) -> None:
        """A request answered after ``seconds`` (the latency histogram)."""
        with self._lock:
            index = next((i for i, b in enumerate(self.latency_buckets) if seconds <= b), len(self.latency_buckets))
            self.latency_counts[index] += 1
            self.latency_sum += seconds

    def record_call(self, images: int, summary: dict) -> None:
        """A pipeline call that made ``images`` images; ``summary``: its handle's summary."""
        with self._lock:
            self.images += images
            self.blocks_computed += summary.get("blocks_computed", 0)
            self.blocks_total += summary.get("blocks_total", 0)
            self.steps_cached += summary.get("steps_cached", 0)
            self.steps_total += summary.get("steps_total", 0)

    _summed = ("images", "latency_sum", "blocks_computed", "blocks_total", "steps_cached", "steps_total")

    def snapshot(self) -> dict:
        """The counters as plain data (for :meth:`merged`)."""
        with self._lock:
            return {"requests": dict(self.requests), "latency_counts": list(self.latency_counts),
                    **{name: getattr(self, name) for name in self._summed}}

    @classmethod
    def merged(cls, snapshots: list[dict]) -> "Metrics":
        """The sum of several replicas' snapshots (:meth:`snapshot`)."""
        total = cls()
        for snap in snapshots:
            for status, count in snap["requests"].items():
                total.requests[status] = total.requests.get(status, 0) + count
            total.latency_counts = [a + b for a, b in zip(total.latency_counts, snap["latency_counts"])]
            for name in cls._summed:
                setattr(total, name, getattr(total, name) + snap[name])
        return total

    def prometheus(self, queue_depth: int) -> str:
        """The counters in Prometheus' text format, with ``queue_depth`` requests waiting."""
        with self._lock:
            lines = ["# HELP dit_engine_requests_total Image requests by outcome.", "# TYPE dit_engine_requests_total counter"]
            lines += [f'dit_engine_requests_total{{status="{status}"}} {count}' for status, count in self.requests.items()]
            lines += ["# HELP dit_engine_images_total Images generated.", "# TYPE dit_engine_images_total counter",
                      f"dit_engine_images_total {self.images}",
                      "# HELP dit_engine_request_latency_seconds Time from request to response.",
                      "# TYPE dit_engine_request_latency_seconds histogram"]
            cumulative = 0
            for bound, count in zip([*self.latency_buckets, float("inf")], self.latency_counts):
                cumulative += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                lines.append(f'dit_engine_request_latency_seconds_bucket{{le="{le}"}} {cumulative}')
            cached = self.steps_cached / self.steps_total if self.steps_total else 0.0
            computed = self.blocks_computed / self.blocks_total if self.blocks_total else 1.0
            lines += [f"dit_engine_request_latency_seconds_sum {self.latency_sum:.6f}",
                      f"dit_engine_request_latency_seconds_count {cumulative}",
                      "# HELP dit_engine_queue_depth Requests waiting.", "# TYPE dit_engine_queue_depth gauge",
                      f"dit_engine_queue_depth {queue_depth}",
                      "# HELP dit_engine_cache_hit_ratio Cached steps over all steps since start.",
                      "# TYPE dit_engine_cache_hit_ratio gauge",
                      f"dit_engine_cache_hit_ratio {cached:.6f}",
                      "# HELP dit_engine_compute_fraction Block forwards computed over block forwards of an uncached run.",
                      "# TYPE dit_engine_compute_fraction gauge",
                      f"dit_engine_compute_fraction {computed:.6f}"]
        return "\n".join(lines) + "\n"
