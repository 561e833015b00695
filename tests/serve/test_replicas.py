"""``serve.replicas=N``: the server on Ray Serve replicas (a local Ray instance on this machine),
and the state they share (kept images, LoRAs, counters), which is plain Python and tested here
without Ray too."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from dit_engine.serve.loras import LoraStore
from dit_engine.serve.metrics import Metrics
from dit_engine.serve.shared import SharedState
from dit_engine.serve.storage import ImageStore

from servers import free_port, start_server


class LocalRegistry:
    """The replicas' LoRA registry over a :class:`SharedState` in this process (what
    :class:`~dit_engine.serve.shared.RemoteLoraRegistry` does through Ray)."""

    def __init__(self, state: SharedState):
        self.state = state

    def claim(self, name, path):
        return self.state.claim_lora(name, path)

    def release(self, name):
        self.state.release_lora(name)

    def wanted(self):
        return self.state.wanted_loras()


class RecordingRunner:
    """A runner that only records which LoRAs it holds."""

    def __init__(self):
        self.held: list[str] = []

    def load_lora(self, name, path):
        self.held.append(name)

    def unload_lora(self, name):
        self.held.remove(name)


def _replica_loras(state: SharedState, lora_dir) -> tuple[LoraStore, RecordingRunner]:
    runner = RecordingRunner()
    no_default = type("Lora", (), {"path": None, "name": "default", "scale": 1.0})()
    return LoraStore([str(lora_dir)], no_default, runner, threading.Lock(), registry=LocalRegistry(state)), runner


def test_a_lora_loaded_or_unloaded_through_one_replica_is_so_on_the_others(tmp_path):
    from safetensors.torch import save_file
    import torch

    save_file({"w": torch.zeros(1)}, tmp_path / "fox.safetensors")
    state = SharedState(keep=4)
    (first, first_runner), (second, second_runner) = _replica_loras(state, tmp_path), _replica_loras(state, tmp_path)
    first.load("fox", str(tmp_path / "fox.safetensors"))
    assert first_runner.held == ["fox"] and second_runner.held == []
    second.sync()
    assert second_runner.held == ["fox"] and second.paths == first.paths
    with pytest.raises(Exception, match="already loaded"):  # the name is the service's, not one replica's
        second.load("fox", str(tmp_path / "fox.safetensors"))
    assert second.unload("fox") is True
    first.sync()
    assert first_runner.held == [] and second_runner.held == [] and state.wanted_loras() == {}


def test_the_replicas_counters_add_up():
    first, second = Metrics(), Metrics()
    first.count("ok"), first.observe(0.2), first.record_call(2, {"steps_cached": 3, "steps_total": 10})
    second.count("ok"), second.count("rejected"), second.observe(7.0), second.record_call(1, {"steps_cached": 1, "steps_total": 10})
    total = Metrics.merged([first.snapshot(), second.snapshot()])
    text = total.prometheus(queue_depth=5)
    assert 'dit_engine_requests_total{status="ok"} 2' in text and 'dit_engine_requests_total{status="rejected"} 1' in text
    assert "dit_engine_images_total 3" in text and "dit_engine_queue_depth 5" in text
    assert 'dit_engine_request_latency_seconds_bucket{le="+Inf"} 2' in text
    assert 'dit_engine_request_latency_seconds_bucket{le="0.25"} 1' in text
    assert "dit_engine_cache_hit_ratio 0.200000" in text


def test_kept_images_are_found_through_the_shared_state_and_the_oldest_forgotten():
    state = SharedState(keep=2)

    class Remote:  # RemoteKept's calls, made in this process
        def put(self, key, value): state.put("image", key, value)
        def get(self, key): return state.get("image", key)
        def pop(self, key): return state.pop("image", key)
        def __len__(self): return state.count("image")

    one_replica, another = ImageStore(2, Remote()), ImageStore(2, Remote())
    for name in ("a", "b", "c"):
        one_replica.add(name, name.encode())
    assert another.get("a") is None and another.get("c") == b"c" and len(another) == 2


@pytest.mark.parametrize("args, message", [
    (["serve.replicas=0"], "serve.replicas=0: use 1 or more"),
    (["serve.replicas=2", "serve.replica_cpus=-1"], "serve.replica_cpus=-1.0: use a number of cores above 0"),
    (["serve.replicas=2", "parallel=ulysses2"], "with a parallel plan (2 ranks) is not supported yet"),
])
def test_bad_replica_settings_are_one_line_and_exit_2(capsys, args, message):
    from dit_engine.serve.__main__ import main

    with pytest.raises(SystemExit) as exit_info:  # the entry point, in this process (nothing starts)
        main([*args, f"serve.port={free_port()}"])
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dit_engine.serve: error:")]
    assert len(lines) == 1 and message in lines[0], lines


def test_more_replicas_than_gpus_is_refused_before_ray_starts(monkeypatch):
    import torch

    from dit_engine.serve.replicas import replica_problems
    from dit_engine.session import Session

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    session = Session.from_overrides(["serve.replicas=3", "model.device=cuda"]).prepare()  # nothing is loaded
    assert replica_problems(session) == ["serve.replicas=3 needs one GPU each and this machine has 2: use serve.replicas=2 "
                                         "or fewer (or join a larger Ray cluster with RAY_ADDRESS)"]


# -- on a local Ray instance ------------------------------------------------------------------


def _image(client, seed: int, **extra) -> bytes:
    answer = client.images.generate(prompt="seven", extra_body={"seed": seed, **extra})
    return base64.b64decode(answer.data[0].b64_json)


def _replica_pids() -> set[int]:
    found = subprocess.run(["pgrep", "-f", "ServeReplica:dit_engine"], capture_output=True, text=True).stdout.split()
    return {int(pid) for pid in found}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """A single-process server and a two-replica one over the same plan (one torch thread each)."""
    pytest.importorskip("ray.serve", reason="serve.replicas needs the serve-ray extra")
    folder = tmp_path_factory.mktemp("replicas")
    args = ["cache=dbcache", "serve.max_batch=4"]
    single, single_url, _ = start_server(args, folder)
    replicated, replicated_url, _ = start_server([*args, "serve.replicas=2", "serve.replica_cpus=1"], folder)
    yield single_url, replicated_url, folder
    for process in (single, replicated):
        process.send_signal(signal.SIGTERM)
    for process in (single, replicated):
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_two_replicas_serve_the_images_one_process_serves(servers):
    import httpx
    from openai import OpenAI

    single_url, replicated_url, _ = servers
    single, replicated = OpenAI(base_url=f"{single_url}/v1", api_key="-"), OpenAI(base_url=f"{replicated_url}/v1", api_key="-")
    seeds = list(range(12))
    with ThreadPoolExecutor(8) as pool:  # concurrent: the replicas batch and both serve
        served = list(pool.map(lambda seed: _image(replicated, seed), seeds))
    assert served == [_image(single, seed) for seed in seeds]
    answered_by = {httpx.get(f"{replicated_url}/health").json()["replica"] for _ in range(20)}
    assert len(answered_by) == 2
    # a URL one replica hands out is found through either
    url = replicated.images.generate(prompt="three", response_format="url", extra_body={"seed": 1}).data[0].url
    assert all(httpx.get(url).status_code == 200 for _ in range(6))
    time.sleep(1.5)  # every replica has reported its counters since
    metrics = httpx.get(f"{replicated_url}/metrics").text
    assert f"dit_engine_images_total {len(seeds) + 1}" in metrics


def test_a_replica_killed_under_load_is_replaced_and_the_service_keeps_answering(servers):
    import httpx

    single_url, replicated_url, _ = servers
    before = _replica_pids()
    assert len(before) == 2
    reference = {seed: _image_from(single_url, seed) for seed in range(24)}
    answers: dict[int, tuple[int, bytes | None]] = {}

    def ask(seed: int) -> None:
        response = httpx.post(f"{replicated_url}/v1/images/generations", json={"prompt": "seven", "seed": seed}, timeout=120)
        image = base64.b64decode(response.json()["data"][0]["b64_json"]) if response.status_code == 200 else None
        answers[seed] = (response.status_code, image)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(ask, seed) for seed in reference]
        time.sleep(0.5)
        os.kill(min(before), signal.SIGKILL)
        for future in futures:
            future.result()
    assert len(answers) == len(reference)  # every request answered (once: one HTTP answer each)
    statuses = [status for status, _ in answers.values()]
    assert set(statuses) <= {200, 500, 502, 503}, statuses  # in flight on the dead replica: a 5xx
    assert statuses.count(200) >= len(reference) // 2
    assert all(image == reference[seed] for seed, (status, image) in answers.items() if status == 200)
    assert _image_from(replicated_url, 99) == _image_from(single_url, 99)  # the service answers on
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(_replica_pids() - before) == 0:
        time.sleep(1)
    assert len(_replica_pids() - before) == 1, "no replica replaced the killed one within 90 s"


def test_a_lora_loaded_through_one_replica_serves_through_every_replica(servers):
    import httpx

    from dit_engine.session import Session
    from test_serve import _tiny_lora

    _, replicated_url, folder = servers
    transformer = Session.from_overrides([]).prepare().load().transformer
    path = _tiny_lora(transformer, folder / "fox.safetensors")
    assert httpx.post(f"{replicated_url}/v1/loras", json={"name": "fox", "path": str(path)}).status_code == 200
    base = _image_from(replicated_url, 5)
    answers = [httpx.post(f"{replicated_url}/v1/images/generations", json={"prompt": "seven", "seed": 5, "lora": "fox"},
                          timeout=120) for _ in range(8)]
    assert [a.status_code for a in answers] == [200] * 8, answers[0].text
    with_lora = {a.json()["data"][0]["b64_json"] for a in answers}
    assert len(with_lora) == 1 and base64.b64decode(with_lora.pop()) != base  # the same LoRA image from both replicas
    listed = {httpx.get(f"{replicated_url}/v1/loras").json()["data"][0]["name"] for _ in range(6)}
    assert listed == {"fox"}
    assert httpx.delete(f"{replicated_url}/v1/loras/fox").status_code == 200
    assert all(_image_from(replicated_url, 5) == base for _ in range(6))  # unloaded everywhere: the base image
    refused = httpx.post(f"{replicated_url}/v1/images/generations", json={"prompt": "seven", "lora": "fox"}, timeout=120)
    assert refused.status_code == 400 and "'fox' is not loaded" in refused.text


def _image_from(url: str, seed: int) -> bytes:
    import httpx

    response = httpx.post(f"{url}/v1/images/generations", json={"prompt": "seven", "seed": seed}, timeout=120)
    assert response.status_code == 200, response.text
    return base64.b64decode(response.json()["data"][0]["b64_json"])
