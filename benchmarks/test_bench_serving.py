"""A bounded load test of ``python -m dit_engine.serve`` on the embedded model (CPU).

    python -m pytest benchmarks/test_bench_serving.py -p no:cacheprovider -s

100 requests (different prompts and seeds) from 8 concurrent clients against a real uvicorn
server, batching on (``serve.max_batch=8``) and off (``serve.max_batch=1``), one after the other on
the same machine. Every response must equal the fresh single-request result for its prompt and
seed (computed in this process through the same pipeline call); the test prints throughput
(images/s) and p50 / p95 latency side by side (docs/serving.md holds a quiet run's table).
"""

from __future__ import annotations

import base64
import io
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from dit_engine.digits import CLASS_NAMES
from dit_engine.testing.servers import start_server
from interleave import TABLES

REQUESTS, CLIENTS = 100, 8
JOBS = [(CLASS_NAMES[i % len(CLASS_NAMES)], 1000 + i) for i in range(REQUESTS)]
RESULTS: dict[str, dict] = {}


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture(scope="module")
def expected() -> dict[tuple[str, int], np.ndarray]:
    """Every (prompt, seed) generated alone: the single-request result."""
    from dit_engine import run_loop
    from dit_engine.session import Session

    session = Session.from_overrides(["model.device=cpu"]).prepare()
    pipe = session.load()
    pipe.set_progress_bar_config(disable=True)
    found = {}
    for prompt, seed in JOBS:
        image = run_loop.call_pipeline(pipe, session.adapter, session.workload, [prompt], [seed])[0]
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        found[(prompt, seed)] = _pixels(buffer.getvalue())
    return found


def _serve(max_batch: int):
    process, url, _ = start_server([f"serve.max_batch={max_batch}", "serve.batch_wait_ms=20", "serve.max_queue=128"])
    return process, url


@pytest.mark.parametrize("label,max_batch", [("batching off", 1), ("batching on", 8)])
def test_load(label, max_batch, expected):
    process, url = _serve(max_batch)
    try:
        with httpx.Client(timeout=300) as client:
            client.post(f"{url}/v1/images/generations", json={"prompt": "zero", "seed": 0})  # warm-up

            def request(job):
                prompt, seed = job
                start = time.perf_counter()
                response = client.post(f"{url}/v1/images/generations", json={"prompt": prompt, "seed": seed})
                return job, response, time.perf_counter() - start

            start = time.perf_counter()
            with ThreadPoolExecutor(CLIENTS) as pool:
                done = list(pool.map(request, JOBS))
            wall = time.perf_counter() - start
    finally:
        process.terminate()
        process.wait(timeout=30)
    mismatched = []
    for (prompt, seed), response, _ in done:
        assert response.status_code == 200, response.text
        served = _pixels(base64.b64decode(response.json()["data"][0]["b64_json"]))
        if not np.array_equal(served, expected[(prompt, seed)]):
            mismatched.append((prompt, seed))
    assert not mismatched, f"{len(mismatched)} responses differ from their single-request result, e.g. {mismatched[0]}"
    latencies = sorted(seconds for _, _, seconds in done)
    RESULTS[label] = {"images_s": REQUESTS / wall, "p50": statistics.median(latencies),
                      "p95": latencies[int(0.95 * (len(latencies) - 1))],
                      "batch": statistics.mean(r.json()["data"][0]["dit_engine"]["batch_images"] for _, r, _ in done)}


def test_report():
    if len(RESULTS) < 2:
        pytest.skip("run the whole module")
    lines = [f"serving: {REQUESTS} requests, {CLIENTS} clients, embedded model, 28 steps, cache=none, CPU",
             f"{'':14} {'images/s':>9} {'p50 s':>7} {'p95 s':>7} {'mean batch':>11}"]
    for label, r in RESULTS.items():
        lines.append(f"{label:14} {r['images_s']:9.2f} {r['p50']:7.3f} {r['p95']:7.3f} {r['batch']:11.2f}")
    TABLES.append("\n".join(lines))
