"""parallel.vae (dit_engine/parallel/vae.py) on gloo CPU ranks: every supported VAE class's decode
and encode split by rows over 2 and 3 ranks against the single-process result, each rank's share
of the rows, the restore on remove(), the bytes counted, and the refusals.

Start-up dominates on 2 cores, so each world size is one launch of ``vae_rank.py`` that runs every
case (both launches run at once) and the tests below read its results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dit_engine.errors import DitEngineError
from dit_engine.parallel.vae import VAE_PARALLEL_CLASSES, vae_parallel_problem

HERE = Path(__file__).parent
TOLERANCE = 1e-4  # max abs difference to the single-process output, fp32
WORLDS = (2, 3)
#: the cases of vae_rank.py: every supported class, AutoencoderKL also with attention outside its
#: mid blocks, Wan 2.1 and 2.2, LTX 0.9.1-like (noise injection) and 0.9.5-like (space-to-channel)
KINDS = ("kl", "kl_attn", "flux2", "wan", "wan22", "qwen_image", "ltx", "ltx095", "hunyuan_video")
CASES = [(world, kind) for world in WORLDS for kind in KINDS]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[int, list[dict]]:
    """Per world size, every rank's results (vae_rank.py's JSON)."""
    folder = tmp_path_factory.mktemp("vae_ranks")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread per rank: the ranks share 2 cores
    running = {}
    for world in WORLDS:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
                   str(HERE / "vae_rank.py"), str(folder / f"world{world}.json")]
        running[world] = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for world, process in running.items():
            _, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, f"{world} ranks: {stderr[-3000:]}"
    finally:
        for process in running.values():
            if process.poll() is None:  # a hung launch: the launcher stops its ranks on SIGTERM
                process.terminate()
                process.wait(timeout=60)
    return {world: json.loads((folder / f"world{world}.json").read_text()) for world in WORLDS}


def per_rank(results, world: int, kind: str) -> list[dict]:
    ranks = results[world]
    assert [r["rank"] for r in ranks] == list(range(world)) and all(r["world"] == world for r in ranks)
    return [r[kind] for r in ranks]


@pytest.mark.parametrize(("world", "kind"), CASES)
def test_decode_matches_one_process(results, world, kind):
    for rank in per_rank(results, world, kind):
        assert rank["decode_diff"] <= TOLERANCE, rank


@pytest.mark.parametrize(("world", "kind"), CASES)
def test_encode_matches_one_process(results, world, kind):
    for rank in per_rank(results, world, kind):
        assert rank["encode_diff"] <= TOLERANCE, rank


@pytest.mark.parametrize(("world", "kind"), CASES)
def test_each_rank_decodes_only_its_rows(results, world, kind):
    """The decoder's first conv saw a chunk of the latent's rows on each rank (every call: Wan and
    Qwen-Image decode frame by frame), and the chunks add up to the whole latent."""
    ranks = per_rank(results, world, kind)
    latent_rows = ranks[0]["latent_rows"]
    for rank in ranks:
        assert rank["rows_seen"] and all(rows < latent_rows for rows in rank["rows_seen"]), rank
        assert len(set(rank["rows_seen"])) == 1
    assert sum(rank["rows_seen"][0] for rank in ranks) == latent_rows


@pytest.mark.parametrize(("world", "kind"), CASES)
def test_remove_restores_the_vae(results, world, kind):
    """After remove(): the same modules, forwards, hooks and parameters; tiling (turned off while
    installed) back on; the decode bit-identical to the one before installing."""
    for rank in per_rank(results, world, kind):
        assert rank["restored"]
        assert rank["tiling"] == [False, True]
        assert rank["after_remove_diff"] == 0.0


@pytest.mark.parametrize(("world", "kind"), CASES)
def test_bytes_are_counted(results, world, kind):
    """Each rank's bytes for one decode cover at least its share of the output gather."""
    for rank in per_rank(results, world, kind):
        elements = 1
        for n in rank["output_shape"]:
            elements *= n
        assert rank["decode_bytes"] >= elements * 4 * (world - 1) // world, rank
        assert rank["encode_bytes"] > 0 and rank["decode_calls"] > 0


@pytest.mark.parametrize("world", WORLDS)
def test_refusals(results, world):
    for rank in results[world]:
        found = rank["refusals"]
        assert "does not know VAE class AutoencoderTiny" in found["unknown_class"]
        assert "parallel.vae=false" in found["unknown_class"]
        assert "conv_act is of class Softmax2d" in found["unknown_module"]
        assert found["unknown_module_left_clean"]
        assert "pads circularly" in found["circular"]
        for key in ("small_decode", "small_encode"):
            assert found[key] and "use fewer ranks, a larger image" in found[key], found[key]
        assert "blocks of 4 rows" in found["small_encode"]
        assert found["works_after_refusal"] <= TOLERANCE


def test_every_launch_ran_every_case(results):
    for world in WORLDS:
        for rank in results[world]:
            assert set(rank) == {"world", "rank", "refusals", *KINDS}


def test_problem_names_the_fix():
    assert {"AutoencoderKL", "AutoencoderKLWan", "AutoencoderKLLTXVideo", "AutoencoderKLHunyuanVideo",
            "AutoencoderKLQwenImage", "AutoencoderKLFlux2"} <= VAE_PARALLEL_CLASSES
    for name in VAE_PARALLEL_CLASSES:
        assert vae_parallel_problem(name) is None
    problem = vae_parallel_problem("AutoencoderDC")
    assert "AutoencoderDC" in problem and "AutoencoderKLWan" in problem and "set parallel.vae=false" in problem
    assert "\n" not in problem


def test_one_rank_is_a_no_op():
    """A group of one installs nothing (and still refuses an unknown class)."""
    import torch
    from diffusers import AutoencoderKL

    from dit_engine.parallel.collectives import CollectiveStats, SequenceGroup
    from dit_engine.parallel.vae import VaeParallel

    torch.manual_seed(0)
    vae = AutoencoderKL(latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                        layers_per_block=1, norm_num_groups=4).eval()
    group = SequenceGroup(None, CollectiveStats())
    z = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        before = vae.decode(z).sample
        parallel = VaeParallel(vae, group)
        assert not any("forward" in m.__dict__ or m._forward_hooks or m._forward_pre_hooks for m in vae.modules())
        assert torch.equal(vae.decode(z).sample, before)
        parallel.remove()
    assert group.stats.calls == 0

    class AutoencoderTiny(torch.nn.Module):
        pass

    with pytest.raises(DitEngineError, match="does not know VAE class AutoencoderTiny"):
        VaeParallel(AutoencoderTiny(), group)
