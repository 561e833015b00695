"""Two nodes as torchrun runs them: two launchers on this machine, one per "node" with two ranks
each, meeting through a c10d rendezvous on 127.0.0.1 (docs/parallel.md's two-node recipe, with
127.0.0.1 for the head node's address). ``parallel=usp2x2`` spans both: Ulysses inside a node,
Ring across the two."""

from __future__ import annotations

import json
import subprocess
import sys

from test_parallel import HERE, TOLERANCE, assert_bytes_follow_the_volume_model, case, rank_env

from dit_engine.testing.servers import free_port


def test_usp_over_two_nodes_equals_one_process(tmp_path):
    cases = [case("flux", ["parallel=usp2x2"], label="usp2x2_two_nodes"),
             case("qwen_image", ["parallel=usp2x2"], "dbcache", label="usp2x2_two_nodes")]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    results = tmp_path / "results.json"
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=2", "--rdzv-backend=c10d",
            f"--rdzv-endpoint=127.0.0.1:{free_port()}", "--rdzv-id=dit-engine-two-nodes",
            str(HERE / "worker.py"), str(tmp_path / "cases.json"), str(results)]
    env = {**rank_env(4), "GLOO_SOCKET_IFNAME": "lo"}  # gloo on the loopback: the "nodes" are this machine
    nodes = [subprocess.Popen(node, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        done = [process.communicate(timeout=600) for process in nodes]
    finally:
        for process in nodes:
            process.kill()
    for process, (_, stderr) in zip(nodes, done):
        assert process.returncode == 0, stderr[-3000:]
    per_rank = json.loads(results.read_text())
    for spec in cases:
        ranks = [rank[spec["id"]] for rank in per_rank]
        assert len(ranks) == 4
        for result in ranks:
            assert "error" not in result, result["error"]
            assert result["max_abs"] <= TOLERANCE, result["max_abs"]
            assert result["masks"] == result["reference_masks"]  # the cache decided as one process does
        assert sorted(r["node"] for r in ranks) == ["0", "0", "1", "1"]  # two ranks on each launcher
        assert len({r["hash"] for r in ranks}) == 1
    assert_bytes_follow_the_volume_model([r[cases[0]["id"]] for r in per_rank], ulysses=2, ring=2)
