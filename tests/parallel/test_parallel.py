"""parallel= on gloo CPU ranks: every mode against the single-process run, for any shape, composed
with the caches, through the Python API (ranks started by torch's launcher), the CLI and the
launcher's failure path.

The multi-rank runs are few and each covers many cases (start-up dominates on 2 cores): the
worker (``worker.py``) runs every case of a world size in one launch and every test below reads
its part of the results.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dit_engine.errors import DitEngineError
from dit_engine.launch.local import RankFailedError, launch_ranks
from dit_engine.testing.cli import run_cli
from dit_engine.threads import rank_environment, threads_per_rank

HERE = Path(__file__).parent


def rank_env(world: int) -> dict[str, str]:
    """The environment for ``world`` ranks started by torchrun in a test: the threads the engine's
    own launcher gives (cores / ranks each, never more than the cores), not the caller's setting."""
    return rank_environment({k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}, world)
TOLERANCE = 1e-4  # max abs difference to the single-process output, fp32

CACHES = {
    "dbcache": ["cache=dbcache", "cache.threshold=0.3"],
    "teacache": ["cache=teacache"],
    "scm_taylorseer": ["cache=scm_static", "calibrator=taylorseer"],
    "dbprune": ["cache=dbprune", "cache.threshold=0.3"],
    "magcache": ["cache=magcache"],
    # each of the tiny case's two prompts decides on its own, alike on every rank
    "dbcache_per_sample": ["cache=dbcache", "cache.per_sample=true", "cache.threshold=0.5", "cache.warmup_steps=1"],
    "dbprune_per_sample": ["cache=dbprune", "cache.per_sample=true", "cache.threshold=0.5", "cache.warmup_steps=1"],
    # the whole stack: int8 weights, blocks compiled beneath the cache's hooks, the cache
    "quant_compile_dbcache": ["quant=int8_weight_only", "compile=regional", "compile.backend=aot_eager",
                              "cache=dbcache", "cache.threshold=0.3"],
}


def case(model, parallel, cache=None, call=None, label=None, requests=1):
    mode = label or parallel[0].split("=")[-1]
    name = "-".join([model, mode, cache or "nocache"])
    return {"id": name, "model": model, "parallel": parallel, "cache": CACHES.get(cache, []), "call": call or {},
            "requests": requests, "lossy": "parallel.comm_dtype=fp8" in parallel}


#: Ulysses pipelined over head sub-groups; the all-to-all in float8
OVERLAP, FP8 = ["parallel.ulysses_overlap=true"], ["parallel.comm_dtype=fp8"]
ULYSSES3 = ["parallel=ulysses2", "parallel.ulysses_degree=3"]
#: the VAE split by rows and the text encoders' prompts split over the ranks (two prompts, and
#: Wan's negative prompts: each text-encoder call has rows to split)
AROUND = ["parallel.vae=true", "parallel.text_encoder=true"]
TWO_PROMPTS = {"prompt": ["a red square", "a blue circle"]}
#: float8 all-to-all on the tiny models: PSNR against one process at least this (dB)
FP8_MIN_PSNR = 30.0


ULYSSES2, RING2 = ["parallel=ulysses2"], ["parallel=ring2"]
#: families beyond the first-party four with a diffusers ``_cp_plan`` (docs/models.md lists them)
OTHER_CP_FAMILIES = ("flux2", "chronoedit", "ltx_video")
FLUX_TRUE_CFG = {"true_cfg_scale": 3.0, "negative_prompt": "blurry"}
#: batched CFG (both branches in one call): under cfg parallel each rank takes half the batch
BATCHED_CFG = {"guidance_scale": 3.0}
TWO_RANKS = [
    *(case(m, mode) for m in ("flux", "wan", "qwen_image", "tiny") for mode in (ULYSSES2, RING2)),
    # the other families whose transformers carry a diffusers context-parallel plan (tiny zoo cases)
    *(case(m, mode) for m in OTHER_CP_FAMILIES for mode in (ULYSSES2, RING2)),
    case("ltx_video", ULYSSES2, "dbcache"),
    *(case(m, ["parallel=tp2"]) for m in ("flux", "qwen_image")),
    case("flux", ["parallel=cfg2"], call=FLUX_TRUE_CFG),
    case("wan", ["parallel=cfg2"]),
    case("qwen_image", ["parallel=cfg2"]),
    case("tiny", ["parallel=cfg2"], call=BATCHED_CFG, label="cfg2_batched"),  # half the batch per rank
    # the first step runs whole; from step 1 each cache keeps its half and decides over the whole batch
    *(case("tiny", ["parallel=cfg2"], cache, call=BATCHED_CFG, label="cfg2_batched", requests=2)
      for cache in ("scm_taylorseer", "teacache", "dbprune", "dbcache")),
    case("tiny", ["parallel=cfg2"], call={"guidance_scale": 3.0, "separate_cfg": True}, label="cfg2_separate"),
    *(case("flux", mode, cache) for mode in (ULYSSES2, RING2) for cache in ("dbcache", "teacache", "scm_taylorseer")),
    *(case(m, mode, cache) for m in ("wan", "qwen_image") for mode in (ULYSSES2, RING2) for cache in ("dbcache", "scm_taylorseer")),
    case("flux", ULYSSES2, "dbprune"),
    case("flux", ULYSSES2, "magcache"),
    case("tiny", ULYSSES2, "teacache"),
    case("tiny", ULYSSES2, "dbcache_per_sample"),
    case("tiny", RING2, "dbprune_per_sample"),
    case("wan", ["parallel=cfg2"], "dbcache"),
    case("qwen_image", ["parallel=tp2"], "dbcache"),
    case("flux", RING2, "dbprune"),
    case("flux", ULYSSES2, "quant_compile_dbcache"),
    # the digits model has 4 heads: 2 per rank, one per overlapped sub-group
    case("tiny", ULYSSES2 + OVERLAP, label="ulysses2_overlap"),
    case("flux", ULYSSES2 + OVERLAP, label="ulysses2_overlap"),
    case("tiny", ULYSSES2 + OVERLAP, "dbcache", label="ulysses2_overlap"),
    case("flux", ULYSSES2 + FP8, label="ulysses2_fp8"),
    case("tiny", ULYSSES2 + FP8 + OVERLAP, label="ulysses2_fp8_overlap"),
    case("tiny", ULYSSES2 + FP8, "dbcache", label="ulysses2_fp8"),
    case("flux", ULYSSES2 + AROUND, call=TWO_PROMPTS, label="ulysses2_vae_text"),
    case("wan", ["parallel=cfg2"] + AROUND, call={**TWO_PROMPTS, "negative_prompt": ["blurry", "dark"]},
         label="cfg2_vae_text"),
    case("ltx_video_full", ULYSSES2 + AROUND, call={**TWO_PROMPTS, "negative_prompt": ["blurry", "dark"]},
         label="ulysses2_vae_text"),
]
THREE_RANKS = [  # any shape: 3 ranks over 2 heads and sequences 3 does not divide
    *(case(m, ["parallel=ulysses2", "parallel.ulysses_degree=3"], label="ulysses3") for m in ("flux", "wan", "qwen_image")),
    *(case(m, ["parallel=ring2", "parallel.ring_degree=3"], label="ring3") for m in ("flux", "wan", "qwen_image")),
    case("tiny", ["parallel=ulysses2", "parallel.ulysses_degree=3"], "dbcache", label="ulysses3"),
    case("tiny", ULYSSES3 + OVERLAP, label="ulysses3_overlap"),  # sub-groups of 1 and 0 heads
    case("flux", ULYSSES3 + FP8 + OVERLAP, label="ulysses3_fp8_overlap"),
    case("flux", ULYSSES3 + AROUND, call=TWO_PROMPTS, label="ulysses3_vae_text"),  # a rank with no prompt
    case("wan", ["parallel=ring2", "parallel.ring_degree=3"] + AROUND,
         call={**TWO_PROMPTS, "negative_prompt": ["blurry", "dark"], "height": 48, "width": 48}, label="ring3_vae_text"),
    case("ltx_video_full", ULYSSES3 + AROUND, call={"prompt": ["a", "b", "c"], "negative_prompt": ["d", "e", "f"]},
         label="ulysses3_vae_text"),
]
FOUR_RANKS = [  # test_two_nodes.py also runs usp2x2 on two launchers ("nodes") of two ranks
    case("flux", ["parallel=usp2x2"]),
    case("flux", ["parallel=tp2", "parallel.ulysses_degree=2"], label="tp2xulysses2"),
    case("wan", ["parallel=ulysses2", "parallel.cfg_degree=2"], label="ulysses2xcfg2"),
    case("tiny", ["parallel=ulysses2", "parallel.cfg_degree=2"], "scm_taylorseer", call=BATCHED_CFG,
         label="ulysses2xcfg2_batched", requests=2),
]


def launch(world: int, cases: list[dict], tmp_path_factory) -> dict[str, list[dict]]:
    """Run ``cases`` on ``world`` gloo ranks; per case id, every rank's result."""
    folder = tmp_path_factory.mktemp(f"ranks{world}")
    (folder / "cases.json").write_text(json.dumps(cases))
    env = rank_env(world)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
               str(HERE / "worker.py"), str(folder / "cases.json"), str(folder / "results.json")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    per_rank = json.loads((folder / "results.json").read_text())
    return {c["id"]: [rank[c["id"]] for rank in per_rank] for c in cases}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    found = {}
    for world, cases in ((2, TWO_RANKS), (3, THREE_RANKS), (4, FOUR_RANKS)):
        found.update(launch(world, cases, tmp_path_factory))
    return found


ALL = TWO_RANKS + THREE_RANKS + FOUR_RANKS


@pytest.mark.parametrize("spec", ALL, ids=[c["id"] for c in ALL])
def test_every_rank_returns_the_single_process_output(results, spec):
    ranks = results[spec["id"]]
    for result in ranks:
        assert "error" not in result, result["error"]
        if spec["lossy"]:  # float8 communication: close, and exact again with the exact exchange
            assert FP8_MIN_PSNR <= result["psnr"] < math.inf, result["psnr"]
            assert result["exact_max_abs"] <= TOLERANCE, result["exact_max_abs"]
        else:
            assert result["max_abs"] <= TOLERANCE, result["max_abs"]
        if spec["requests"] == 2:  # the next request restores the whole batch and splits it again
            assert result["second_max_abs"] <= TOLERANCE, result["second_max_abs"]
    assert len({r["hash"] for r in ranks}) == 1, "ranks returned different outputs"
    parallel = ranks[0]["parallel"]
    assert parallel["world_size"] == len(ranks)
    if "parallel=tp2" in spec["parallel"]:
        assert parallel["sharded_parameters"] > 0  # the weights really were split
    else:
        assert parallel["collective_calls"] > 0  # the work really was spread


AROUND_CASES = [c for c in ALL if "parallel.vae=true" in c["parallel"]]


@pytest.mark.parametrize("spec", AROUND_CASES, ids=[c["id"] for c in AROUND_CASES])
def test_the_vae_and_the_text_encoders_really_were_split(results, spec):
    """The cases above equal one process; these counters show the VAE decode and the text-encoder
    calls did not run whole (a split that silently fell back would pass the equality alone)."""
    for rank in results[spec["id"]]:
        assert rank["parallel"]["vae_calls_split"] > 0
        assert rank["parallel"]["text_encoder_calls_split"] > 0


def splits_cfg_calls(spec: dict) -> bool:
    """Whether cfg parallel gives each rank whole CFG calls (two calls a step): the ranks then
    record different branches' decisions. With batched CFG every rank decides every step."""
    cfg = "parallel=cfg2" in spec["parallel"] or "parallel.cfg_degree=2" in spec["parallel"]
    return cfg and spec["call"] != BATCHED_CFG


CACHED = [c for c in ALL if c["cache"] and not splits_cfg_calls(c)]


@pytest.mark.parametrize("spec", CACHED, ids=[c["id"] for c in CACHED])
def test_caches_decide_alike_on_every_rank_and_as_one_process_does(results, spec):
    ranks = results[spec["id"]]
    reference = ranks[0]["reference_masks"]
    assert reference, "the cache recorded no decisions"
    for result in ranks:  # float8 communication changes the signal a little: alike on every rank
        assert result["masks"] == (ranks[0]["masks"] if spec["lossy"] else reference)


def test_the_caches_really_skipped_work_in_the_compared_runs(results):
    """The decision checks would be weak if nothing were ever cached: most cached cases skip."""
    skipped = [c["id"] for c in CACHED if "0" in json.dumps(results[c["id"]][0]["masks"]).replace("cfg0", "")]
    assert len(skipped) >= len(CACHED) // 2, skipped


@pytest.mark.parametrize("spec", [c for c in ALL if not c["cache"]], ids=[c["id"] for c in ALL if not c["cache"]])
def test_remove_restores_the_plain_model_or_says_why_not(results, spec):
    for result in results[spec["id"]]:
        if "parallel=tp2" in spec["parallel"]:
            assert "cannot be removed" in result["removed"]  # sharded weights: reload instead
        else:
            assert result["removed"] is True
            assert result["after_remove_max_abs"] == 0.0


def test_cfg_parallel_splits_the_branches_between_ranks(results):
    """Under cfg2 with two CFG calls per step, each rank computes one branch, from the first step
    on (the adapters of FLUX, Qwen-Image and Wan text-to-video know the output's shape): its
    cache keeps that branch's decisions only."""
    rank0, rank1 = results["wan-cfg2-dbcache"]
    assert list(rank0["masks"]) == ["cache.dbcache:transformer/cfg0"]
    assert list(rank1["masks"]) == ["cache.dbcache:transformer/cfg1"]
    assert len(rank0["masks"]["cache.dbcache:transformer/cfg0"][0]) == 8


@pytest.mark.parametrize("case_id", ["flux-cfg2-nocache", "wan-cfg2-nocache", "qwen_image-cfg2-nocache"])
def test_two_call_cfg_is_split_from_the_first_step(results, case_id):
    """8 steps of two CFG calls: each rank runs the blocks 8 times (one branch a step), not 9."""
    for rank in results[case_id]:
        assert rank["block_batches"] == [1] * 8, rank["block_batches"]


def test_batched_cfg_is_split_from_the_first_step(results):
    """The tiny model's adapter says its CFG is batched (cond and uncond in one call): each rank
    computes half the batch from the first step on, instead of the whole first step everywhere."""
    for rank in results["tiny-cfg2_batched-dbcache"]:
        whole = 2 * 2  # two prompts, each with its unconditional row
        assert rank["block_batches"] and set(rank["block_batches"]) == {whole // 2}, rank["block_batches"]


def test_a_failing_rank_ends_every_rank_with_its_message():
    started = time.monotonic()
    with pytest.raises(RankFailedError, match="rank 1 of 2 failed: RuntimeError: boom on rank 1"):
        launch_ranks(2, str(HERE / "failing_rank.py"), [])
    assert time.monotonic() - started < 60


def test_the_cli_starts_its_ranks_and_writes_the_single_process_images(tmp_path, monkeypatch):
    common = ["cache=dbcache", "workload=smoke", "workload.num_inference_steps=12", "report.quality=false", "quiet=true"]

    def cli(*args, out, launcher=()):
        command = [sys.executable, *launcher, "-m", "dit_engine", *common, *args, f"hydra.run.dir={out}"]
        # the caller's OMP_NUM_THREADS dropped: the launchers choose the threads
        env = rank_env(2) if launcher else {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        return out

    # the single-process reference: the CLI's code path in this process (start-up is most of a subprocess)
    monkeypatch.chdir(tmp_path)
    code, stderr = run_cli(*common, f"hydra.run.dir={tmp_path / 'single'}")
    assert code == 0, stderr[-3000:]
    single = tmp_path / "single"
    parallel = cli("parallel=ulysses2", out=tmp_path / "parallel")
    # under torchrun every rank runs the CLI and joins torchrun's group; rank 0 writes
    joined = cli("parallel=ulysses2", out=tmp_path / "torchrun",
                 launcher=("-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"))
    images = sorted(p.name for p in (single / "images").iterdir())
    assert images and images == sorted(p.name for p in (parallel / "images").iterdir())
    assert images == sorted(p.name for p in (joined / "images").iterdir())
    for name in images:
        assert (single / "images" / name).read_bytes() == (parallel / "images" / name).read_bytes(), name
        assert (single / "images" / name).read_bytes() == (joined / "images" / name).read_bytes(), name
    metrics = json.loads((parallel / "metrics.json").read_text())
    assert [r["rank"] for r in metrics["parallel"]["ranks"]] == [0, 1]
    assert all(r["collective_s"] > 0 and r["latency_total_s"] > 0 for r in metrics["parallel"]["ranks"])
    # each rank got cores / ranks intra-op threads (one each on 2 cores), never more than the cores in all
    assert [r["torch_threads"] for r in metrics["parallel"]["ranks"]] == [threads_per_rank(2)] * 2
    single_compute = json.loads((single / "metrics.json").read_text())["compute"]
    assert metrics["compute"]["compute_fraction"] == single_compute["compute_fraction"] < 1  # same decisions, some cached
    assert metrics["compute"]["transforms"]["cache.dbcache"] == single_compute["transforms"]["cache.dbcache"]
    assert not list(tmp_path.glob("outputs")), "a rank other than 0 wrote outputs"


def test_float8_communication_reports_its_psnr_against_the_exact_exchange(tmp_path):
    """metrics.json's parallel section holds the PSNR of the float8 run against the same plan with
    the exact all-to-all; with no cache that exact run is the single-process output, so the PSNR
    against the reference is about the same number."""
    out = tmp_path / "fp8"
    command = [sys.executable, "-m", "dit_engine", "parallel=ulysses2", "parallel.comm_dtype=fp8", "workload=smoke",
               "report.quality=true", "quiet=true", f"report.reference_dir={tmp_path / 'refs'}", f"hydra.run.dir={out}"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"})
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    against_exact = metrics["parallel"]["psnr_vs_exact"]
    assert FP8_MIN_PSNR <= against_exact["psnr"] < math.inf, against_exact
    # the exact exchange equals one process within 1e-4 in float (the worker's cases check that);
    # after 8-bit rounding a pixel on a half level may still differ on another CPU: a fraction of a dB
    assert against_exact["psnr"] == pytest.approx(metrics["quality"]["aggregate"]["psnr"], abs=0.5)
    assert "float8" in (out / "plan.txt").read_text()


# -- bad input found before any weight loads ----------------------------------------------------


@pytest.mark.parametrize("overrides,expected", [
    (["parallel=ring2", "parallel.comm_dtype=fp8"], "parallel.comm_dtype=fp8 quantizes the Ulysses all-to-all"),
    (["parallel=ulysses2", "parallel.comm_dtype=int4"], "parallel.comm_dtype=int4: use fp8"),
    (["parallel=cfg2", "parallel.ulysses_overlap=true"], "parallel.ulysses_overlap=true overlaps the Ulysses all-to-all"),
])
def test_float8_and_overlap_need_a_ulysses_exchange(overrides, expected):
    assert expected in _plan_problems(*overrides)


@pytest.mark.parametrize("overrides,expected", [
    (["parallel=ulysses2", "parallel.ulysses_degree=1", "parallel.vae=true"], "parallel.vae=true splits the vae over the plan's ranks, and this plan has one"),
    (["parallel=ulysses2", "parallel.ulysses_degree=1", "parallel.text_encoder=true"], "parallel.text_encoder=true splits the text encoder over the plan's ranks"),
    (["parallel=ulysses2", "parallel.ring_degree=2", "parallel.nodes=3"], "3 nodes do not divide the 4 ranks"),
    (["parallel=auto", "parallel.world_size=4", "parallel.nodes=3"], "3 nodes do not divide the 4 ranks"),
])
def test_vae_text_encoder_and_node_settings_are_checked_before_loading(overrides, expected):
    assert _plan_problems(*overrides).count(expected) == 1  # said once (parallel=auto says it, not the check again)


def test_a_vae_class_vae_parallel_does_not_know_is_refused_before_loading(tmp_path):
    from dit_engine.testing import save_tiny_flux_pipeline

    folder = save_tiny_flux_pipeline(tmp_path / "flux")
    index = json.loads((folder / "model_index.json").read_text())
    index["vae"] = ["diffusers", "AutoencoderTiny"]
    (folder / "model_index.json").write_text(json.dumps(index))
    problems = _plan_problems("model=flux", f"model.pretrained={folder}", "parallel=ulysses2", "parallel.vae=true")
    assert "parallel.vae=true does not know VAE class AutoencoderTiny" in problems


def test_auto_keeps_ulysses_inside_a_node(monkeypatch):
    from dit_engine.session import Session

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    plan = Session.from_overrides(["model=flux", "parallel=auto", "parallel.world_size=8", "parallel.nodes=4",
                                   "dry_run=true"]).prepare().plan
    dims = plan.dims
    assert (dims.ulysses, dims.ring) == (2, 4)  # 24 heads allow 8, but a node holds 2 ranks


def test_float8_communication_needs_float8_casts(monkeypatch):
    import torch

    monkeypatch.delattr(torch, "float8_e4m3fn")
    assert "needs torch's float8_e4m3fn" in _plan_problems("parallel=ulysses2", "parallel.comm_dtype=fp8")


def _plan_problems(*overrides: str) -> str:
    from dit_engine.session import Session

    with pytest.raises(DitEngineError) as info:
        Session.from_overrides(list(overrides)).prepare()
    return str(info.value)


def test_degrees_that_do_not_match_torchruns_world_are_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert "torchrun started 4 ranks but the parallel degrees multiply to 2" in _plan_problems("parallel=ulysses2")


def test_more_gpu_ranks_than_gpus_are_refused(monkeypatch):
    import torch

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert "need 4 GPU ranks but this machine has 2 GPU(s)" in _plan_problems("parallel=ulysses4", "model.device=cuda")


def test_tensor_parallel_needs_the_adapters_plan():
    import dit_engine
    from dit_engine.testing import build_tiny_wan_pipeline

    with pytest.raises(DitEngineError, match="model wan has no tensor-parallel plan"):
        dit_engine.apply(build_tiny_wan_pipeline(), "parallel=tp2")


def test_cfg_parallel_needs_a_second_branch_on_a_guidance_distilled_model(tmp_path):
    from dit_engine.testing import save_tiny_flux_pipeline

    folder = save_tiny_flux_pipeline(tmp_path / "flux")
    problems = _plan_problems("model=flux", f"model.pretrained={folder}", "parallel=cfg2")
    assert "needs two CFG branches" in problems and "true_cfg_scale" in problems


def test_a_parallel_plan_without_ranks_says_how_to_start_them(monkeypatch):
    import dit_engine
    from dit_engine.testing import build_tiny_flux_pipeline

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(DitEngineError, match="run under torchrun"):
        dit_engine.apply(build_tiny_flux_pipeline(), "parallel=ulysses2")


@pytest.mark.parametrize("case_id,ulysses,ring", [("flux-ulysses2-nocache", 2, 1), ("flux-ring2-nocache", 1, 2),
                                                  ("flux-ulysses3-nocache", 3, 1), ("flux-usp2x2-nocache", 2, 2),
                                                  ("flux-ulysses2_overlap-nocache", 2, 1)])
def test_the_volume_model_predicts_the_bytes_sent(results, case_id, ulysses, ring):
    assert_bytes_follow_the_volume_model(results[case_id], ulysses, ring)


@pytest.mark.parametrize("case_id,exact_id,ulysses,head_groups", [
    ("flux-ulysses2_fp8-nocache", "flux-ulysses2-nocache", 2, 1),
    ("flux-ulysses3_fp8_overlap-nocache", "flux-ulysses3-nocache", 3, 2),
])
def test_the_volume_model_predicts_the_bytes_of_float8_communication(results, case_id, exact_id, ulysses, head_groups):
    assert_bytes_follow_the_volume_model(results[case_id], ulysses, 1, fp8=True, head_groups=head_groups)
    fp8 = sum(rank["parallel"]["bytes_sent"] for rank in results[case_id])
    fp32 = sum(rank["parallel"]["bytes_sent"] for rank in results[exact_id])
    assert fp8 < 0.4 * fp32  # a quarter of fp32's all-to-all payload, plus scales and the output gather


def assert_bytes_follow_the_volume_model(ranks: list[dict], ulysses: int, ring: int, fp8: bool = False,
                                         head_groups: int = 1) -> None:
    """docs/parallel.md's communication model against what the collectives sent (tiny FLUX, fp32:
    64 image + 32 text tokens, 2 heads x 16, 6 attention layers, 8 steps of one call)."""
    from dit_engine.parallel.volume import Workload, context_parallel_bytes

    tiny_flux = Workload(tokens=96, hidden=32, attention_layers=6, output_tokens=64, output_channels=64, bytes_per_element=4)
    predicted = 8 * context_parallel_bytes(tiny_flux, ulysses, ring, fp8=fp8, head_groups=head_groups)
    sent = [rank["parallel"]["bytes_sent"] for rank in ranks]
    # Uneven splits (3 ranks) make ranks differ a little; the mean follows the model. The rest is
    # the per-call exchange of chunk lengths (8 bytes per peer).
    mean = sum(sent) / len(sent)
    assert abs(mean - predicted) / predicted < 0.02, (sent, predicted)


def test_a_users_torchrun_script_needs_no_process_group_code():
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(HERE / "api_rank.py")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=rank_env(2))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("rank output (1, 3, 32, 32) world 2") == 2
