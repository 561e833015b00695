"""``python -m dit_engine.serve``: a real uvicorn server on 127.0.0.1 driven by the official
``openai`` client (images equal a CLI run's), bad requests as one-line 4xx JSON errors with the
server healthy after each, the bounded queue (429), and the server's own bad input (exit 2)."""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from servers import start_server

openai = pytest.importorskip("openai")

KEY = "test-key"
PLAN = ["cache=dbcache"]


def _serve(args: list[str], folder: Path):
    """A real server (``python -m dit_engine.serve *args``) until the generator is closed; yields its URL."""
    process, url, _ = start_server(args, folder)
    yield url
    process.terminate()
    process.wait(timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from _serve([*PLAN, f"serve.api_key={KEY}", "serve.max_body_mb=1"], tmp_path_factory.mktemp("serve"))


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _cli_images(tmp_path: Path, prompts: list[str], seed: int, extra: tuple[str, ...] = ()) -> list[np.ndarray]:
    from dit_engine.session import Session

    overrides = [*PLAN, *extra, f"workload.prompts=[{','.join(prompts)}]", f"workload.seed={seed}", f"workload.batch_size={len(prompts)}",
                 "workload.warmup=0", "workload.repeats=1", "report.contact_sheet=false", "model.device=cpu"]
    metrics = Session.from_overrides(overrides).run(tmp_path / "cli")
    return [_pixels((tmp_path / "cli" / name).read_bytes()) for name in metrics["images"]]


def test_openai_client_images_equal_a_cli_run(server, tmp_path):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY)
    result = client.images.generate(prompt="seven", n=2, extra_body={"seed": 3})
    served = [_pixels(base64.b64decode(item.b64_json)) for item in result.data]
    # the server decides per sample (cache.per_sample=true, so that DBCache batches): the same plan's CLI run
    expected = _cli_images(tmp_path, ["seven", "seven"], seed=3, extra=("cache.per_sample=true",))
    assert len(served) == 2 and all(np.array_equal(a, b) for a, b in zip(served, expected))
    measured = result.data[0].model_extra["dit_engine"]
    assert measured["seed"] == 3 and 0 < measured["compute_fraction"] < 1 and measured["latency_s"] > 0
    assert result.data[1].model_extra["dit_engine"]["seed"] == 4


def test_a_dbcache_server_batches_and_16_concurrent_requests_equal_their_alone_images(server):
    assert httpx.get(f"{server}/health", headers={"Authorization": f"Bearer {KEY}"}).json()["batching"] is True
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=300)
    prompts = ["zero", "one", "two", "three", "four", "five", "six", "seven"] * 2

    def generate(index):
        item = client.images.generate(prompt=prompts[index], extra_body={"seed": 100 + index}).data[0]
        return _pixels(base64.b64decode(item.b64_json)).astype(np.int16), item.model_extra["dit_engine"]["batch_images"]

    alone = [generate(index)[0] for index in range(16)]
    results: dict[int, tuple] = {}
    threads = [threading.Thread(target=lambda index=index: results.update({index: generate(index)})) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert max(calls for _, calls in results.values()) > 1  # they did share calls
    assert all(int(np.abs(results[index][0] - alone[index]).max()) <= 1 for index in range(16))


def test_url_models_and_metrics(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY)
    result = client.images.generate(prompt="two", response_format="url", extra_body={"seed": 1})
    png = httpx.get(result.data[0].url, headers={"Authorization": f"Bearer {KEY}"}).content
    assert _pixels(png).shape == (16, 16, 3)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    text = httpx.get(f"{server}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert 'dit_engine_requests_total{status="ok"}' in text and "dit_engine_request_latency_seconds_bucket" in text
    assert "dit_engine_queue_depth 0" in text and "dit_engine_cache_hit_ratio" in text


BAD = [
    ({"content": b'{"prompt": "seven",'}, 422, "the body is not valid JSON"),
    ({"json": {"prompt": "seven", "colour": "red"}}, 422, "colour: unknown field"),
    ({"json": {"prompt": "seven", "n": 0}}, 422, "n=0: ask for 1 to 8 images (serve.max_images)"),
    ({"json": {"prompt": "seven", "n": 10000}}, 422, "n=10000: ask for 1 to 8 images (serve.max_images)"),
    ({"json": {"prompt": "seven", "size": "1024x1024"}}, 400, "size=1024x1024 cannot be generated"),
    ({"json": {"prompt": "seven", "size": "big"}}, 400, "give it as WIDTHxHEIGHT"),
    ({"json": {"prompt": "a cat"}}, 400, "unknown prompt 'a cat' for the tiny model"),
    ({"json": {"prompt": "seven", "num_inference_steps": 0}}, 422, "num_inference_steps=0: ask for 1 to 200 (serve.max_steps)"),
    ({"content": b'{"prompt": "' + b"x" * (50 * 1024 * 1024) + b'"}'}, 413, "the limit is serve.max_body_mb=1 MB"),
    ({"json": {"prompt": "seven"}, "key": "wrong"}, 401, "missing or wrong API key"),
]


@pytest.mark.parametrize("request_kwargs,status,message", BAD, ids=[m for _, _, m in BAD])
def test_bad_requests_are_one_line_json_errors_and_the_server_stays_healthy(server, request_kwargs, status, message):
    kwargs = dict(request_kwargs)
    headers = {"Authorization": f"Bearer {kwargs.pop('key', KEY)}", "content-type": "application/json"}
    response = httpx.post(f"{server}/v1/images/generations", headers=headers, timeout=60, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"] and "\n" not in error["message"]
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_a_full_queue_answers_429_with_retry_after():
    from fastapi.testclient import TestClient

    from dit_engine.serve.app import create_app
    from dit_engine.serve.engine import ServingEngine
    from dit_engine.session import Session

    engine = ServingEngine(Session.from_overrides(["serve.max_queue=1", "serve.batch_wait_ms=0"]).prepare())
    client = TestClient(create_app(engine))
    try:
        results = []
        threads = [threading.Thread(target=lambda: results.append(client.post("/v1/images/generations", json={"prompt": "one"})))
                   for _ in range(2)]
        with engine.calls.pipe_lock:  # the worker takes the first request and waits for the lock
            for thread in threads:
                thread.start()
                time.sleep(0.5)  # the first is taken by the worker, the second waits in the queue
            refused = client.post("/v1/images/generations", json={"prompt": "one"})
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        assert "the request queue is full" in refused.json()["error"]["message"]
        for thread in threads:
            thread.join(60)
        assert [r.status_code for r in results] == [200, 200]
    finally:
        engine.close()


@pytest.mark.parametrize("args,expected", [
    (["cache=dbcachee"], "unknown option cache=dbcachee"),
    (["parallel=ulysses2", "lora=/no/such.safetensors"], "lora.path=/no/such.safetensors does not exist"),
    (["parallel=ulysses2", "parallel.ulysses_degree=0"], "ulysses_degree"),
    (["workload.prompts=[cat]"], "unknown prompt 'cat' for the tiny model"),
])
def test_the_server_refuses_bad_input_in_one_line_exit_2(args, expected, capsys):
    from dit_engine.serve.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dit_engine.serve: error: ") and expected in lines[0]


def test_videos_queue_run_and_return_every_frame():
    """/v1/videos on a tiny Wan pipeline (in-process server): queued -> completed, the content is
    every frame of the single-request result, DELETE forgets it; an image model refuses."""
    from fastapi.testclient import TestClient

    from dit_engine import run_loop
    from dit_engine.serve.app import create_app
    from dit_engine.serve.engine import ServingEngine
    from dit_engine.session import Session
    from dit_engine.testing import build_tiny_wan_pipeline

    pipe = build_tiny_wan_pipeline()
    session = Session.from_overrides(["cache=dbcache", "workload.num_inference_steps=4", "+workload.call_kwargs.max_sequence_length=16"])
    engine = ServingEngine(session.prepare(pipe), pipe=pipe)
    client = TestClient(create_app(engine))
    try:
        created = client.post("/v1/videos", json={"prompt": "a fox", "size": "32x32", "num_frames": 5, "seed": 7})
        assert created.status_code == 200, created.text
        video = created.json()
        assert video["object"] == "video" and video["status"] in ("queued", "in_progress", "completed")
        for _ in range(600):
            status = client.get(f"/v1/videos/{video['id']}").json()
            if status["status"] in ("completed", "failed"):
                break
            time.sleep(0.1)
        assert status["status"] == "completed", status
        content = client.get(f"/v1/videos/{video['id']}/content")
        assert content.headers["content-type"] == "image/apng"
        served = Image.open(io.BytesIO(content.content))
        frames = []
        for index in range(served.n_frames):
            served.seek(index)
            frames.append(np.asarray(served.convert("RGB")))
        settings = engine.requests.settings(steps=None, guidance=None, size=(32, 32), negative_prompt=None, num_frames=5)
        engine.runner.handle.reset()
        alone = run_loop.call_pipeline(pipe, engine.adapter, engine.requests.workload(settings, ["a fox"]), ["a fox"], [7], frames=True)[0]
        assert len(frames) == 5 and all(np.array_equal(a, np.asarray(b.convert("RGB"))) for a, b in zip(frames, alone))
        assert client.delete(f"/v1/videos/{video['id']}").json()["deleted"] is True
        assert client.get(f"/v1/videos/{video['id']}").status_code == 404
    finally:
        engine.close()


def test_an_image_model_refuses_videos():
    from fastapi.testclient import TestClient

    from dit_engine.serve.app import create_app
    from dit_engine.serve.engine import ServingEngine
    from dit_engine.session import Session

    engine = ServingEngine(Session.from_overrides([]).prepare())
    try:
        response = TestClient(create_app(engine)).post("/v1/videos", json={"prompt": "seven"})
        assert response.status_code == 400 and "generates images; use POST /v1/images/generations" in response.json()["error"]["message"]
    finally:
        engine.close()


def _tiny_lora(transformer, path: Path, seed: int = 0) -> Path:
    """Random rank-2 LoRA weights for every block's attn.to_q / to_v, saved with safetensors."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for name, module in transformer.named_modules():
        if name.endswith(("attn.to_q", "attn.to_v")):
            weights[f"transformer.{name}.lora_A.weight"] = torch.randn(2, module.in_features, generator=generator) * 0.5
            weights[f"transformer.{name}.lora_B.weight"] = torch.randn(module.out_features, 2, generator=generator) * 0.5
    save_file(weights, str(path))
    return path


def test_a_lora_loads_changes_the_output_and_unloads_to_the_base_exactly(tmp_path):
    pytest.importorskip("peft")
    from fastapi.testclient import TestClient

    from dit_engine.serve.app import create_app
    from dit_engine.serve.engine import ServingEngine
    from dit_engine.session import Session

    engine = ServingEngine(Session.from_overrides(["cache=dbcache", f"serve.lora_dirs=['{tmp_path}']"]).prepare())
    client = TestClient(create_app(engine))
    lora = _tiny_lora(engine.pipe.transformer, tmp_path / "fox.safetensors")

    def image(**extra):
        response = client.post("/v1/images/generations", json={"prompt": "seven", "seed": 3, **extra})
        assert response.status_code == 200, response.text
        return _pixels(base64.b64decode(response.json()["data"][0]["b64_json"]))

    try:
        base = image()
        assert client.post("/v1/loras", json={"name": "fox", "path": str(lora)}).status_code == 200
        assert np.array_equal(image(), base)  # loaded, not asked for: the base model
        with_lora = image(lora="fox")
        assert not np.array_equal(with_lora, base)
        assert not np.array_equal(image(lora={"name": "fox", "scale": 0.5}), with_lora)
        assert client.delete("/v1/loras/fox").json()["deleted"] is True
        assert np.array_equal(image(), base)  # unloaded: exactly the base model again
        for request, status, message in [
            (lambda: client.post("/v1/loras", json={"name": "gone", "path": str(tmp_path / "missing.safetensors")}), 400, "no LoRA the server may load at that path"),
            (lambda: client.post("/v1/images/generations", json={"prompt": "seven", "lora": "fox"}), 400, "lora 'fox' is not loaded"),
            (lambda: client.delete("/v1/loras/fox"), 404, "no LoRA named 'fox'"),
        ]:
            response = request()
            assert response.status_code == status and message in response.json()["error"]["message"], response.text
    finally:
        engine.close()


def test_a_request_combines_several_loras_and_batches_only_with_the_same_set(tmp_path):
    pytest.importorskip("peft")
    from fastapi.testclient import TestClient

    from dit_engine.serve.app import create_app
    from dit_engine.serve.engine import ServingEngine
    from dit_engine.session import Session

    engine = ServingEngine(Session.from_overrides([f"serve.lora_dirs=['{tmp_path}']", "serve.max_loras=2",
                                                   "serve.batch_wait_ms=0"]).prepare())
    client = TestClient(create_app(engine))

    def post(**extra):
        return client.post("/v1/images/generations", json={"prompt": "seven", "seed": 3, **extra})

    def image(**extra):
        response = post(**extra)
        assert response.status_code == 200, response.text
        return _pixels(base64.b64decode(response.json()["data"][0]["b64_json"]))

    try:
        base = image()
        for name, seed in (("fox", 0), ("owl", 1), ("elk", 2)):
            path = _tiny_lora(engine.pipe.transformer, tmp_path / f"{name}.safetensors", seed)
            assert client.post("/v1/loras", json={"name": name, "path": str(path)}).status_code == 200
        fox, owl = image(lora="fox"), image(lora="owl")
        both = image(lora=["fox", {"name": "owl", "scale": 1.0}])
        assert not any(np.array_equal(both, other) for other in (base, fox, owl))
        assert np.array_equal(image(lora=["fox", {"name": "owl", "scale": 0.0}]), fox)  # a zero scale adds nothing
        # requests with different LoRA sets never share a pipeline call; the same set does
        results = {}
        requests = {"a": ["fox", "owl"], "b": ["fox", "owl"], "c": ["fox"]}
        threads = [threading.Thread(target=lambda key=key, lora=lora: results.update({key: post(lora=lora)}))
                   for key, lora in requests.items()]
        with engine.calls.pipe_lock:
            for thread in threads:
                thread.start()
                time.sleep(0.3)
        for thread in threads:
            thread.join(60)
        calls = {key: response.json()["data"][0]["dit_engine"]["batch_images"] for key, response in results.items()}
        assert calls["c"] == 1 and calls["a"] == calls["b"]
        assert np.array_equal(_pixels(base64.b64decode(results["c"].json()["data"][0]["b64_json"])), fox)
        for extra, status, message in [
            ({"lora": ["fox", "fox"]}, 400, "lora 'fox' is named twice"),
            ({"lora": ["fox", "nobody"]}, 400, "lora 'nobody' is not loaded (fox, owl, elk)"),
            ({"lora": ["fox", "owl", "elk"]}, 422, "lora: 3 adapters; a request combines at most 2 (serve.max_loras)"),
            ('{"prompt": "seven", "lora": [{"name": "fox", "scale": NaN}]}', 422, "lora scale=nan: give a finite number from 0 to 10 (serve.max_lora_scale), for 'fox'"),
        ]:
            response = (client.post("/v1/images/generations", content=extra, headers={"content-type": "application/json"})
                        if isinstance(extra, str) else post(**extra))
            assert response.status_code == status and message in response.json()["error"]["message"], response.text
        for name in ("fox", "owl", "elk"):
            assert client.delete(f"/v1/loras/{name}").json()["deleted"] is True
        assert np.array_equal(image(), base)  # every adapter unloaded: exactly the base model again
    finally:
        engine.close()


def test_the_cli_loads_a_lora_and_refuses_a_missing_one(tmp_path):
    pytest.importorskip("peft")
    from dit_engine.errors import PlanError
    from dit_engine.session import Session
    from dit_engine.digits import load_digits_pipeline

    lora = _tiny_lora(load_digits_pipeline().transformer, tmp_path / "fox.safetensors")
    common = ["workload.prompts=[seven]", "workload.warmup=0", "workload.repeats=1", "report.contact_sheet=false", "model.device=cpu"]
    plain = Session.from_overrides(common).run(tmp_path / "plain")
    styled = Session.from_overrides([*common, f"lora.path={lora}"]).run(tmp_path / "lora")
    assert not np.array_equal(_pixels((tmp_path / "plain" / plain["images"][0]).read_bytes()),
                              _pixels((tmp_path / "lora" / styled["images"][0]).read_bytes()))
    with pytest.raises(PlanError, match="lora.path=/no/such.safetensors does not exist"):
        Session.from_overrides(["lora.path=/no/such.safetensors"]).prepare()
    with pytest.raises(PlanError, match=r"lora.path with quant= \(quant.scheme=int8_weight_only\) is not supported"):
        Session.from_overrides([f"lora.path={lora}", "quant=int8_weight_only"]).prepare()


def test_image_edits_take_a_multipart_image_and_equal_a_direct_call():
    """POST /v1/images/edits on a tiny FLUX Kontext pipeline (in-process server)."""
    from diffusers import FluxKontextPipeline
    from fastapi.testclient import TestClient

    from dit_engine import run_loop
    from dit_engine.serve.app import create_app
    from dit_engine.serve.engine import ServingEngine
    from dit_engine.session import Session
    from dit_engine.testing import build_tiny_flux_pipeline

    pipe = FluxKontextPipeline(**build_tiny_flux_pipeline().components)
    session = Session.from_overrides(["cache=dbcache", "workload.num_inference_steps=4", "workload.height=32", "workload.width=32",
                                      "+workload.call_kwargs.max_area=1024", "+workload.call_kwargs.max_sequence_length=16"])
    engine = ServingEngine(session.prepare(pipe), pipe=pipe)
    engine.session.workload.call_kwargs["_auto_resize"] = False  # keep the 32 px input (else ~1 MP)
    client = TestClient(create_app(engine))
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    try:
        response = client.post("/v1/images/edits", data={"prompt": "make it red", "seed": "5"},
                               files={"image": ("in.png", buffer.getvalue(), "image/png")})
        assert response.status_code == 200, response.text
        served = _pixels(base64.b64decode(response.json()["data"][0]["b64_json"]))
        settings = engine.requests.settings(steps=None, guidance=None, size=None, negative_prompt=None)
        workload = engine.requests.workload(settings, ["make it red"])
        workload.call_kwargs["image"] = picture.convert("RGB")
        engine.runner.handle.reset()
        alone = run_loop.call_pipeline(pipe, engine.adapter, workload, ["make it red"], [5])[0]
        assert np.array_equal(served, np.asarray(alone.convert("RGB")))
        bad = client.post("/v1/images/edits", data={"prompt": "x"}, files={"image": ("in.png", b"not an image", "image/png")})
        assert bad.status_code == 400 and "not an image file" in bad.json()["error"]["message"]
        missing = client.post("/v1/images/edits", data={"prompt": "x"})
        assert missing.status_code == 422
    finally:
        engine.close()


def test_a_text_to_image_model_refuses_edits():
    from fastapi.testclient import TestClient

    from dit_engine.serve.app import create_app
    from dit_engine.serve.engine import ServingEngine
    from dit_engine.session import Session

    engine = ServingEngine(Session.from_overrides([]).prepare())
    try:
        response = TestClient(create_app(engine)).post("/v1/images/edits", data={"prompt": "seven"},
                                                       files={"image": ("in.png", b"x", "image/png")})
        assert response.status_code == 400 and "does not edit images" in response.json()["error"]["message"]
    finally:
        engine.close()


@pytest.fixture(scope="module")
def parallel_server(tmp_path_factory):
    # the tests' LoRA files are written under pytest's base temporary directory
    yield from _serve([*PLAN, "parallel=ulysses2", f"serve.lora_dirs=['{tmp_path_factory.getbasetemp()}']"],
                      tmp_path_factory.mktemp("serve_parallel"))


def test_a_parallel_plan_is_served_by_every_rank_loras_too(parallel_server, tmp_path):
    """parallel=ulysses2 on two gloo ranks: rank 0 serves, both run each call (collectives counted);
    the images match the single-process CLI's; a LoRA loaded over HTTP reaches every rank, matches
    the CLI's ``lora=<path>`` run, and unloads to the base images exactly."""
    pytest.importorskip("peft")
    from dit_engine.digits import load_digits_pipeline

    assert httpx.get(f"{parallel_server}/health").json()["ranks"] == 2
    client = openai.OpenAI(base_url=f"{parallel_server}/v1", api_key="unused")

    def served(**extra):
        result = client.images.generate(prompt="seven", n=2, extra_body={"seed": 3, **extra})
        return [_pixels(base64.b64decode(item.b64_json)) for item in result.data], result.data[0].model_extra["dit_engine"]

    def close(a, b):  # gloo ranks reorder float sums: within one level of 255
        return np.abs(a.astype(int) - b.astype(int)).max() <= 1

    base, measured = served()
    assert measured["ranks"] == 2 and measured["collective_calls"] > 0
    assert all(close(a, b) for a, b in zip(base, _cli_images(tmp_path / "plain", ["seven", "seven"], seed=3)))

    lora = _tiny_lora(load_digits_pipeline().transformer, tmp_path / "fox.safetensors")
    assert httpx.post(f"{parallel_server}/v1/loras", json={"name": "fox", "path": str(lora)}).status_code == 200
    styled, _ = served(lora="fox")
    assert not any(np.array_equal(a, b) for a, b in zip(styled, base))
    expected = _cli_images(tmp_path / "lora", ["seven", "seven"], seed=3, extra=(f"lora={lora}",))  # the alias of lora.path
    assert all(close(a, b) for a, b in zip(styled, expected))
    assert httpx.delete(f"{parallel_server}/v1/loras/fox").json()["deleted"] is True
    again, _ = served()
    assert all(np.array_equal(a, b) for a, b in zip(again, base))
