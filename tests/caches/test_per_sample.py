"""``cache.per_sample=true``: each sample of a batched call decides on its own and keeps its own
cached residuals, so its decisions and image do not depend on its batch-mates."""

from __future__ import annotations

import pytest
import torch

import dit_engine
from dit_engine.errors import PlanError
from dit_engine.session import Session

PROMPTS = ["zero", "three", "seven", "eight"]


def run(pipe, prompts, seeds, **extra):
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    return pipe(prompt=list(prompts), num_inference_steps=28, generator=generators, output_type="pt", **extra).images


def with_plan(pipe, overrides, prompts, seeds):
    handle = dit_engine.apply(pipe, *overrides)
    try:
        images = run(pipe, prompts, seeds)
        summary = handle.summary()
    finally:
        handle.remove()
    stats = next(s for name, s in summary["transforms"].items() if name.startswith("cache."))
    return images, summary, stats["branches"]["transformer/cfg0"]["masks"]


def levels(a: torch.Tensor, b: torch.Tensor) -> int:
    """The largest difference between two images in 8-bit levels."""
    return int(((a * 255).round() - (b * 255).round()).abs().max())


CASES = {
    "dbcache": ("cache=dbcache",),
    "dbcache_taylorseer": ("cache=dbcache", "calibrator=taylorseer"),
    "teacache": ("cache=teacache",),
    "magcache": ("cache=magcache",),
    "scm_dynamic": ("cache=scm",),
    "seacache": ("cache=seacache",),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_sample_decides_and_computes_as_it_would_alone(tiny_pipe, case):
    overrides = (*CASES[case], "cache.per_sample=true")
    batched, summary, masks = with_plan(tiny_pipe, overrides, PROMPTS, range(4))
    assert summary["transforms"][next(n for n in summary["transforms"] if n.startswith("cache."))]["samples_total"] == 4 * 28
    alone_masks = []
    for index, prompt in enumerate(PROMPTS):
        alone, _, mask = with_plan(tiny_pipe, overrides, [prompt], [index])
        alone_masks += mask
        assert levels(batched[index:index + 1], alone) <= 1, (case, prompt)
    assert masks == alone_masks  # the same decisions, sample by sample
    if case in ("dbcache", "dbcache_taylorseer", "teacache", "seacache"):
        assert len(set(masks)) > 1  # the samples did decide differently here (MagCache's curve is the same for all)


def test_dbprune_prunes_each_samples_blocks_as_it_would_alone(tiny_pipe):
    overrides = ("cache=dbprune", "cache.per_sample=true")

    def pruning(prompts, seeds):
        handle = dit_engine.apply(tiny_pipe, *overrides)
        try:
            images = run(tiny_pipe, prompts, seeds)
            stats = handle.summary()["transforms"]["cache.dbprune"]
        finally:
            handle.remove()
        return images, stats["branches"]["transformer/cfg0"]["middle_blocks_computed_per_step"], stats

    batched, histories, stats = pruning(PROMPTS, range(4))
    assert stats["blocks_computed"] < stats["blocks_total"]  # it did prune
    alone_histories = []
    for index, prompt in enumerate(PROMPTS):
        alone, history, _ = pruning([prompt], [index])
        alone_histories += history
        assert levels(batched[index:index + 1], alone) <= 1, prompt
    assert histories == alone_histories  # each sample computed the same blocks at each step as alone
    assert len({tuple(h) for h in histories}) > 1  # and the samples did differ


def test_decisions_do_not_depend_on_batch_mates(tiny_pipe):
    overrides = ("cache=dbcache", "cache.per_sample=true")
    _, _, first = with_plan(tiny_pipe, overrides, ["seven", "zero", "one"], [5, 0, 1])
    _, _, second = with_plan(tiny_pipe, overrides, ["seven", "eight", "two", "four"], [5, 8, 2, 4])
    assert first[0] == second[0]


def test_one_sample_and_threshold_zero_are_the_whole_call_path(tiny_pipe):
    alone, _, mask = with_plan(tiny_pipe, ("cache=dbcache", "cache.per_sample=true"), ["seven"], [5])
    whole, _, whole_mask = with_plan(tiny_pipe, ("cache=dbcache",), ["seven"], [5])
    assert torch.equal(alone, whole) and mask == whole_mask
    plain = run(tiny_pipe, PROMPTS, range(4))
    exact, summary, _ = with_plan(tiny_pipe, ("cache=dbcache", "cache.threshold=0", "cache.per_sample=true"), PROMPTS, range(4))
    assert torch.equal(exact, plain) and summary["steps_cached"] == 0
    assert torch.equal(run(tiny_pipe, PROMPTS, range(4)), plain)  # remove() restores the plain pipeline


@pytest.mark.parametrize("overrides,expected", [
    (["cache=scm_static", "cache.per_sample=true"], "cache.skip_level=model skips whole calls"),
    (["cache=dbcache", "cache.separate_cfg=false", "cache.per_sample=true"], "it cannot follow CFG branch 0"),
])
def test_unsupported_per_sample_plans_are_one_line_errors(overrides, expected):
    with pytest.raises(PlanError) as info:
        Session.from_overrides(overrides).prepare()
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_the_server_batches_a_per_sample_cache_and_every_image_equals_its_alone_one():
    import base64
    import io
    import threading
    import time

    import numpy as np
    from fastapi.testclient import TestClient
    from PIL import Image

    from dit_engine.serve.app import create_app
    from dit_engine.serve.engine import ServingEngine

    engine = ServingEngine(Session.from_overrides(["cache=dbcache", "cache.per_sample=true", "serve.batch_wait_ms=0"]).prepare())
    client = TestClient(create_app(engine))

    def post(prompt, seed):
        response = client.post("/v1/images/generations", json={"prompt": prompt, "seed": seed})
        assert response.status_code == 200, response.text
        item = response.json()["data"][0]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))), dtype=np.int16), item["dit_engine"]

    try:
        assert client.get("/health").json()["batching"] is True
        alone = {(p, s): post(p, s)[0] for p, s in zip(PROMPTS, range(4))}
        results = {}
        threads = [threading.Thread(target=lambda p=p, s=s: results.update({(p, s): post(p, s)})) for p, s in zip(PROMPTS, range(4))]
        with engine.calls.pipe_lock:  # the worker waits for the lock while the four requests queue up
            for thread in threads:
                thread.start()
            time.sleep(1.5)
        for thread in threads:
            thread.join(60)
        assert max(stats["batch_images"] for _, stats in results.values()) > 1  # batched
        assert all(int(np.abs(results[key][0] - alone[key]).max()) <= 1 for key in alone)
    finally:
        engine.close()


def test_the_server_decides_per_sample_wherever_the_plan_allows():
    from dit_engine.serve.settings import per_sample_session

    assert per_sample_session(["cache=dbcache"]).cfg.cache.per_sample is True
    assert per_sample_session(["cache=teacache"]).cfg.cache.per_sample is True
    assert per_sample_session(["cache=seacache"]).cfg.cache.per_sample is True
    assert per_sample_session(["cache=dbcache", "cache.per_sample=false"]).cfg.cache.per_sample is False  # as given
    assert per_sample_session(["cache=dbprune"]).cfg.cache.per_sample is True
    assert per_sample_session(["cache=dbcache", "parallel=ulysses2"]).cfg.cache.per_sample is True
    assert per_sample_session(["cache=dbcache", "parallel=cfg2"]).cfg.cache.per_sample is False  # it cannot: one request per call
    assert per_sample_session(["cache=scm_static"]).cfg.cache.per_sample is False  # batches without it
    assert not per_sample_session([]).cfg.cache.get("per_sample")  # no cache: nothing to decide
    with pytest.raises(PlanError, match="cache.threshold=-1.0 must be >= 0"):
        per_sample_session(["cache=dbcache", "cache.threshold=-1"])  # other problems are the plan's as ever
