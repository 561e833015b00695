"""The server against hostile or careless input: every request field bounded by a setting (422
before queueing), deadlines that stop the pipeline call and free the worker, SIGTERM during a long
request, bodies counted however they arrive, clients trickling headers, LoRA paths confined to
``serve.lora_dirs`` with one answer for every refusal, non-finite weights and outputs as failures,
and every ``serve.*`` setting checked at startup. After each server case, ``/health`` answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from servers import free_port, start_server

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

TIMEOUT_S = 3  # the in-process engine's serve.request_timeout_s
LONG = 100_000  # steps that would run for many minutes: only a deadline or a cancellation ends them


def _lora_file(transformer, path: Path, value: float | None = None) -> Path:
    """A rank-2 LoRA for every block's attn.to_q / to_v saved with safetensors: random weights, or
    every lora_B weight set to ``value`` (NaN, Inf, or a huge finite number)."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    weights = {}
    for name, module in transformer.named_modules():
        if name.endswith(("attn.to_q", "attn.to_v")):
            weights[f"transformer.{name}.lora_A.weight"] = torch.randn(2, module.in_features, generator=generator) * 0.5
            lora_b = torch.randn(module.out_features, 2, generator=generator) * 0.5
            weights[f"transformer.{name}.lora_B.weight"] = lora_b if value is None else torch.full_like(lora_b, value)
    save_file(weights, str(path))
    return path


@pytest.fixture(scope="module")
def allowed(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("loras")


@pytest.fixture(scope="module")
def engine(allowed):
    from dit_engine.serve.engine import ServingEngine
    from dit_engine.session import Session

    overrides = [f"serve.request_timeout_s={TIMEOUT_S}", f"serve.max_steps={LONG}", "serve.max_guidance_scale=50",
                 "serve.batch_wait_ms=0", f"serve.lora_dirs=['{allowed}']"]
    engine = ServingEngine(Session.from_overrides(overrides).prepare())
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def client(engine):
    from fastapi.testclient import TestClient

    from dit_engine.serve.app import create_app

    return TestClient(create_app(engine))


def _healthy(client_or_url) -> None:
    get = client_or_url.get if not isinstance(client_or_url, str) else (lambda path: httpx.get(client_or_url + path, timeout=10))
    assert get("/health").json()["status"] == "ok"


def _error(response, status: int) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert "\n" not in message
    return message


# -- every field bounded, checked before queueing -------------------------------------------------

OUT_OF_BOUNDS = [
    ({"num_inference_steps": 1_000_000_000}, "num_inference_steps=1000000000: ask for 1 to 100000 (serve.max_steps)"),
    ({"guidance_scale": 1e308}, "guidance_scale=1e+308: give a finite number within ±50 (serve.max_guidance_scale)"),
    ('"guidance_scale": Infinity', "guidance_scale=inf: give a finite number"),
    ('"guidance_scale": NaN', "guidance_scale=nan: give a finite number"),
    ({"guidance_scale": -51}, "guidance_scale=-51.0: give a finite number within ±50"),
    ({"size": "99999x16"}, "size=99999x16: each side is at most 4096 pixels (serve.max_side)"),
    ({"size": "9" * 5000 + "x16"}, "each side is at most 4096 pixels (serve.max_side)"),
    ({"n": 9}, "n=9: ask for 1 to 8 images (serve.max_images)"),
    ({"prompt": "x" * 4001}, "prompt is 4001 characters; the limit is 4000 (serve.max_prompt_chars)"),
    ({"negative_prompt": "x" * 4001}, "negative_prompt is 4001 characters; the limit is 4000 (serve.max_prompt_chars)"),
    ('"lora": {"name": "fox", "scale": Infinity}', "lora scale=inf: give a finite number from 0 to 10 (serve.max_lora_scale)"),
    ({"lora": {"name": "fox", "scale": 11}}, "lora scale=11.0: give a finite number from 0 to 10 (serve.max_lora_scale)"),
    ({"seed": -1}, "seed=-1: give 0 to"),
    ({"seed": 2**64}, f"seed={2**64}: give 0 to {2**64 - 1}"),
]


@pytest.mark.parametrize("fields,message", OUT_OF_BOUNDS, ids=[m.split(":")[0] for _, m in OUT_OF_BOUNDS])
def test_fields_out_of_bounds_are_422_naming_the_limit_before_queueing(engine, client, fields, message):
    if isinstance(fields, str):  # JSON that Python's json accepts but no finite number is: Infinity, NaN
        response = client.post("/v1/images/generations", content='{"prompt": "seven", ' + fields + "}",
                               headers={"content-type": "application/json"})
    else:
        response = client.post("/v1/images/generations", json={"prompt": "seven", **fields})
    assert message in _error(response, 422)
    assert engine.queue.depth() == 0
    _healthy(client)


def test_a_video_past_serve_max_frames_is_refused(engine):
    from dit_engine.serve.errors import LimitError

    settings = engine.requests.settings(steps=None, guidance=None, size=None, negative_prompt=None, num_frames=257)
    with pytest.raises(LimitError, match=r"num_frames=257: ask for 1 to 256 \(serve.max_frames\)"):
        engine.requests.check("seven", settings)


def test_a_body_that_does_not_arrive_in_time_is_408():
    """The body counts against serve.request_timeout_s too: a client that sends its headers and
    then stalls (or trickles the body) gets 408 instead of holding the request open."""
    import asyncio
    import json
    from types import SimpleNamespace

    from dit_engine.serve.guard import Guard

    async def stalled_body():  # a first chunk, then nothing
        if not sent_chunk:
            sent_chunk.append(True)
            return {"type": "http.request", "body": b'{"prompt": ', "more_body": True}
        await asyncio.sleep(60)

    async def send(message):
        answer.append(message)

    async def never_called(scope, receive, send):
        raise AssertionError("the endpoint ran without its body")

    sent_chunk, answer = [], []
    guard = Guard(never_called, SimpleNamespace(api_key=None, max_body_mb=1, request_timeout_s=0.5))
    started = time.monotonic()
    asyncio.run(guard({"type": "http", "path": "/v1/images/generations", "headers": []}, stalled_body, send))
    assert time.monotonic() - started < 5
    assert answer[0]["status"] == 408
    assert "did not arrive within serve.request_timeout_s=0.5 s" in json.loads(answer[1]["body"])["error"]["message"]


# -- deadlines: the call stops, the worker is freed ----------------------------------------------


def test_a_request_past_its_deadline_is_stopped_and_frees_the_worker(engine, client):
    """Two long requests (the second waits behind the first) answer 504 at their deadline; the
    pipeline call is really stopped: a short request right after is served within its own
    deadline (were the worker still denoising 100000 steps, it would answer 504 too)."""
    responses = {}

    def post(name: str) -> None:
        responses[name] = client.post("/v1/images/generations", json={"prompt": "seven", "num_inference_steps": LONG})

    started = time.monotonic()
    threads = [threading.Thread(target=post, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
        time.sleep(0.3)
    for thread in threads:
        thread.join(30)
    waited = time.monotonic() - started
    for response in responses.values():
        assert f"serve.request_timeout_s={TIMEOUT_S}" in _error(response, 504)
    assert waited < TIMEOUT_S + 2
    short = client.post("/v1/images/generations", json={"prompt": "seven", "num_inference_steps": 2})
    assert short.status_code == 200, short.text
    _healthy(client)


def test_a_request_that_waits_past_its_deadline_is_dropped_unrun(engine, client):
    """The worker held (the pipeline lock taken) past the deadline of a request and of one queued
    behind it: both answer 504, neither generates an image, and the next request is served."""
    images_before = engine.metrics.images
    responses = []

    def post() -> None:
        responses.append(client.post("/v1/images/generations", json={"prompt": "seven"}))

    with engine.calls.pipe_lock:  # the worker takes the first request and waits for the lock
        threads = [threading.Thread(target=post) for _ in range(2)]
        for thread in threads:
            thread.start()
            time.sleep(0.2)
        for thread in threads:
            thread.join(30)
    assert [r.status_code for r in responses] == [504, 504]
    short = client.post("/v1/images/generations", json={"prompt": "seven", "num_inference_steps": 2})
    assert short.status_code == 200, short.text
    assert engine.metrics.images == images_before + 1  # the two late requests made no image
    _healthy(client)


# -- LoRA files: only from serve.lora_dirs, one answer for every refusal; non-finite weights -------


def test_lora_paths_outside_serve_lora_dirs_all_get_one_answer(engine, client, allowed, tmp_path):
    outside = _lora_file(engine.pipe.transformer, tmp_path / "outside.safetensors")  # a valid LoRA, but not allowed
    (allowed / "escape.safetensors").symlink_to(outside)
    (allowed / "empty").mkdir()
    candidates = [str(outside), "/etc/shadow", "/etc/passwd", "/no/such/file", "/etc", str(allowed / "missing.safetensors"),
                  str(allowed / "escape.safetensors"), str(allowed / "empty"), str(allowed / "nul\x00byte"),
                  str(allowed / ".." / outside.parent.name / outside.name)]  # out through ..
    answers = {(r.status_code, r.text) for r in
               (client.post("/v1/loras", json={"name": "x", "path": path}) for path in candidates)}
    assert len(answers) == 1
    status, _ = answers.pop()
    assert status == 400
    refused = client.post("/v1/loras", json={"name": "x", "path": "/etc/shadow"})
    assert "inside serve.lora_dirs" in _error(refused, 400)
    assert client.get("/v1/loras").json()["data"] == []
    _healthy(client)


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_a_lora_with_non_finite_weights_is_refused_422_before_use(engine, client, allowed, value):
    path = _lora_file(engine.pipe.transformer, allowed / f"bad_{value}.safetensors", value)
    assert "holds NaN or infinite values" in _error(client.post("/v1/loras", json={"name": "bad", "path": str(path)}), 422)
    assert client.get("/v1/loras").json()["data"] == []
    _healthy(client)


def test_non_finite_output_is_a_500_with_one_line_nothing_kept(engine, client, allowed):
    """A LoRA whose weights are finite but huge turns the output to Inf / NaN: HTTP 500 with the
    engine's one-line cause (dit_engine.errors.NonFiniteOutputError), no image kept as a success,
    the server healthy and the next request served."""
    pytest.importorskip("peft")
    path = _lora_file(engine.pipe.transformer, allowed / "huge.safetensors", 1e30)
    assert client.post("/v1/loras", json={"name": "huge", "path": str(path)}).status_code == 200
    try:
        kept = len(engine.images)
        response = client.post("/v1/images/generations", json={"prompt": "seven", "lora": "huge", "response_format": "url"})
        assert "NaN" in _error(response, 500) and response.json()["error"]["type"] == "server_error"
        assert len(engine.images) == kept
        _healthy(client)
        assert client.post("/v1/images/generations", json={"prompt": "seven", "num_inference_steps": 2}).status_code == 200
    finally:
        client.delete("/v1/loras/huge")


# -- every serve.* setting checked at startup ----------------------------------------------------

BAD_SETTINGS = [
    (["serve.port=99999"], "serve.port=99999: give a TCP port from 1 to 65535"),
    (["serve.port=0"], "serve.port=0: give a TCP port from 1 to 65535"),
    (["serve.max_queue=0"], "serve.max_queue=0: use 1 or more"),
    (["serve.api_key="], "serve.api_key is empty: unset it"),
    (["serve.host=no-such-host.invalid"], "serve.host=no-such-host.invalid does not resolve"),
    (["serve.lora_dirs=[/no/such/dir]"], "serve.lora_dirs: /no/such/dir is not a directory"),
    (["serve.max_body_mb=0"], "serve.max_body_mb=0.0: use a finite number above 0"),
    (["serve.request_timeout_s=nan"], "serve.request_timeout_s=nan: use a finite number above 0"),
    (["serve.max_guidance_scale=5000"], "serve.max_guidance_scale=5000.0: use a number above 0 and at most 1000"),
    (["serve.max_lora_scale=1000"], "serve.max_lora_scale=1000.0: use at most 100"),
    (["serve.max_steps=10", "workload.num_inference_steps=20"], "the workload's defaults are outside the server's limits"),
]


@pytest.mark.parametrize("args,expected", BAD_SETTINGS, ids=[e.split(":")[0] for _, e in BAD_SETTINGS])
def test_bad_serve_settings_are_one_line_exit_2(args, expected, capsys):
    from dit_engine.serve.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dit_engine.serve: error: ") and expected in lines[0], lines


# -- a real server: chunked bodies, slow clients, clients that leave, SIGTERM -----------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real ``python -m dit_engine.serve`` (the last test of this module stops it with SIGTERM)."""
    args = ["serve.max_body_mb=1", "serve.header_timeout_s=1", f"serve.max_steps={LONG}", "serve.request_timeout_s=60"]
    process, url, port = start_server(args, tmp_path_factory.mktemp("hardening"))
    yield url, port, process
    if process.poll() is None:
        process.kill()
        process.wait(30)


def test_a_chunked_body_over_the_limit_is_413(server):
    url, _, _ = server

    def chunks():  # 10 MB without a Content-Length: Transfer-Encoding: chunked
        for _ in range(160):
            yield b"x" * 65536

    try:
        response = httpx.post(f"{url}/v1/images/generations", content=chunks(), headers={"content-type": "application/json"},
                              timeout=30)
    except httpx.WriteError:  # the server answered and closed while the rest was still being sent
        pytest.fail("the 413 answer was not read before the connection closed")
    assert "the limit is serve.max_body_mb=1 MB" in _error(response, 413)
    _healthy(url)


@pytest.mark.parametrize("after_a_response", [False, True], ids=["fresh", "keep-alive"])
def test_a_client_trickling_its_headers_is_disconnected(server, after_a_response):
    url, port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        if after_a_response:  # the next request's headers on a kept-alive connection get the same time
            connection.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            assert connection.recv(4096).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        closed = None
        for byte in b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: " + b"a" * 20:
            try:
                connection.sendall(bytes([byte]))
                time.sleep(0.25)
                connection.setblocking(False)
                try:
                    data = connection.recv(4096)
                except BlockingIOError:
                    data = None
                finally:
                    connection.setblocking(True)
            except (BrokenPipeError, ConnectionResetError):
                data = b""
            if data is not None:  # the 408 line, or the close itself
                closed = time.monotonic() - started
                break
    assert closed is not None and closed < 1 + 1.5, closed  # serve.header_timeout_s=1
    _healthy(url)


def test_a_client_that_leaves_frees_the_worker(server):
    url, port, _ = server
    body = b'{"prompt": "seven", "num_inference_steps": %d}' % LONG
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(b"POST /v1/images/generations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                           b"content-length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(1)  # running now
    started = time.monotonic()
    short = httpx.post(f"{url}/v1/images/generations", json={"prompt": "seven", "num_inference_steps": 2}, timeout=60)
    assert short.status_code == 200 and time.monotonic() - started < 5
    _healthy(url)


def test_sigterm_during_a_long_request_stops_the_server_in_one_line(server):
    """Last in this module: it stops the module's server."""
    url, _, process = server
    answers = []
    long = threading.Thread(target=lambda: answers.append(
        httpx.post(f"{url}/v1/images/generations", json={"prompt": "seven", "num_inference_steps": LONG}, timeout=60)))
    long.start()
    time.sleep(1)  # the long request is running
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    stopped_in = time.monotonic() - started
    long.join(30)
    assert process.returncode == 143 and stopped_in < 10, (process.returncode, stopped_in)
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "dit_engine.serve: stopped (SIGTERM)", stderr
    assert "shutting down" in _error(answers[0], 503)


@pytest.mark.parametrize("after_s", [1.5, 6.0])
def test_sigterm_while_the_server_starts_is_one_line_and_143(tmp_path, after_s):
    """SIGTERM while torch imports or the model loads (a deploy rolled back at once) stops the
    server as cleanly as while it serves; a stop landing in a finalizer (``__del__``, where Python
    would print and drop the exception) is delivered again instead of lost."""
    process = subprocess.Popen([sys.executable, "-m", "dit_engine.serve", f"serve.port={free_port()}"], cwd=tmp_path,
                               env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(after_s)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("dit_engine.serve: model=")]
    assert process.returncode == 143, stderr
    assert lines == ["dit_engine.serve: stopped (SIGTERM)"], stderr
