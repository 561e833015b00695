"""A load test anyone can rerun: a served plan driven by the ``openai`` client at several
concurrencies; images/s, latency percentiles, images per pipeline call, and whether every image
equals the same request served alone.

For each plan a server is started (``python -m dit_engine.serve <plan>``, one torch thread), each
distinct request (prompt, seed) is first served alone (the reference image), then ``C`` clients
send ``--requests`` requests each, all at once. Images are compared with the alone-served ones:
``equal`` counts bit-identical images, ``max_diff`` is the largest 8-bit difference seen.

    python benchmarks/serve_load.py                                   # the four plans, 1 / 4 / 16 clients
    python benchmarks/serve_load.py --plans "cache=dbcache" --clients 16 --requests 2

Wall time (images/s, latency) is what a client sees, so run it on an otherwise idle machine; the
server runs one torch thread (``OMP_NUM_THREADS=1``) so that its batches, not its threads, scale.
``serve.replicas=2`` (needs the ``serve-ray`` extra) runs two Ray Serve replicas of one thread each:
against the one-process rows it shows what a second core buys.
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from dit_engine.testing.servers import start_server

PLANS = ["cache=none", "cache=dbcache", "cache=scm_static calibrator=taylorseer", "cache=dbcache serve.replicas=2"]
PROMPTS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def start(plan: list[str], folder: str) -> tuple[subprocess.Popen, str]:
    """The server of ``plan`` (one torch thread), once ``/health`` answers."""
    try:
        process, url, _ = start_server([*plan, "serve.max_queue=256"], cwd=folder, env={"OMP_NUM_THREADS": "1"},
                                       timeout_s=180)
    except RuntimeError as err:
        raise SystemExit(f"the server of {plan}: {err}") from None
    return process, url


def pixels(b64: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.int16)


def generate(client, prompt: str, seed: int, steps: int) -> tuple[np.ndarray, dict, float]:
    started = time.perf_counter()
    result = client.images.generate(prompt=prompt, extra_body={"seed": seed, "num_inference_steps": steps})
    seconds = time.perf_counter() - started
    item = result.data[0]
    return pixels(item.b64_json), item.model_extra["dit_engine"], seconds


def load(url: str, clients: int, requests: int, steps: int, references: dict) -> dict:
    """``clients`` threads, each sending ``requests`` requests back to back, all started at once."""
    import openai

    results, errors = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client_loop(index: int) -> None:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=600, max_retries=0)
        barrier.wait()
        for r in range(requests):
            key = (PROMPTS[(index * requests + r) % len(PROMPTS)], index * requests + r)
            try:
                image, stats, seconds = generate(client, key[0], key[1], steps)
            except Exception as err:  # counted and shown, not hidden
                with lock:
                    errors.append(f"{type(err).__name__}: {err}")
                continue
            with lock:
                results.append((key, image, stats, seconds))

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    latencies = sorted(seconds for *_, seconds in results)
    diffs = [int(np.abs(image - references[key]).max()) for key, image, _, _ in results if key in references]
    return {
        "clients": clients,
        "images": len(results),
        "errors": errors,
        "images_per_s": len(results) / wall,
        "p50_s": statistics.median(latencies) if latencies else None,
        "p95_s": latencies[min(len(latencies) - 1, int(round(0.95 * (len(latencies) - 1))))] if latencies else None,
        "images_per_call": statistics.mean(stats["batch_images"] for _, _, stats, _ in results) if results else None,
        "equal": sum(d == 0 for d in diffs),
        "max_diff": max(diffs) if diffs else None,
    }


def main(argv: list[str] | None = None) -> int:
    import httpx
    import openai

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plans", nargs="+", default=PLANS, help="each a space-separated list of overrides")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=2, help="requests per client")
    parser.add_argument("--steps", type=int, default=28)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for plan in args.plans:
            process, url = start(plan.split(), folder)
            try:
                client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=600, max_retries=0)
                health = httpx.get(f"{url}/health").json()
                count = max(args.clients) * args.requests
                keys = [(PROMPTS[i % len(PROMPTS)], i) for i in range(count)]
                references = {key: generate(client, key[0], key[1], args.steps)[0] for key in keys}  # each alone
                for clients in args.clients:
                    row = load(url, clients, args.requests, args.steps, references)
                    row["plan"] = plan
                    row["batching"] = health.get("batching")
                    rows.append(row)
                    print(f"{plan} {clients} clients: {row['images_per_s']:.2f} images/s, p50 {row['p50_s']:.2f} s, "
                          f"{row['images_per_call']:.2f} images/call, {row['equal']}/{row['images']} equal, "
                          f"errors {len(row['errors'])}", file=sys.stderr, flush=True)
            finally:
                process.terminate()
                process.wait(30)
    print("| plan | batching | clients | images/s | p50 latency (s) | p95 latency (s) | images per call | equal to alone | max 8-bit diff |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| `{r['plan']}` | {r['batching']} | {r['clients']} | {r['images_per_s']:.2f} | {r['p50_s']:.2f} | {r['p95_s']:.2f} | "
              f"{r['images_per_call']:.2f} | {r['equal']}/{r['images']} | {r['max_diff']} |")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
