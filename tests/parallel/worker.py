"""One rank of the multi-process parallel tests (started by torch's launcher from test_parallel.py).

For every case of the JSON case file: build the tiny pipeline (seeded, identical on every rank),
run it single-process with the case's cache overrides (the reference, no collectives), then
with the parallel overrides added, and record the max abs difference, the per-branch cache masks
of both runs and a hash of this rank's output. Rank 0 writes the collected results as JSON.
"""

from __future__ import annotations

import hashlib
import json
import sys

import torch
import torch.distributed as dist

import dit_engine
from dit_engine.testing import conformance
from dit_engine.testing.pipelines import (build_tiny_flux_pipeline, build_tiny_qwen_image_pipeline, build_tiny_wan_pipeline,
                                          tiny_flux_call_kwargs, tiny_qwen_image_call_kwargs, tiny_wan_call_kwargs)


def build(model: str):
    if model == "tiny":
        case = conformance.tiny_model_case(steps=6)
        return case.pipe, case.call
    builders = {
        "flux": (build_tiny_flux_pipeline, tiny_flux_call_kwargs),
        "wan": (build_tiny_wan_pipeline, tiny_wan_call_kwargs),
        "qwen_image": (build_tiny_qwen_image_pipeline, tiny_qwen_image_call_kwargs),
    }
    if model not in builders:  # any other family: its tiny zoo case
        from dit_engine.testing.zoo import load_zoo

        zoo_case = load_zoo()[model].build()
        zoo_case.pipe.set_progress_bar_config(disable=True)
        return zoo_case.pipe, lambda **extra: {**zoo_case.call(), **extra}
    build_pipe, call_kwargs = builders[model]
    pipe = build_pipe()
    pipe.set_progress_bar_config(disable=True)
    return pipe, call_kwargs


def masks(summary: dict) -> dict:
    found = {}
    for name, stats in summary["transforms"].items():
        for branch, info in stats.get("branches", {}).items():
            found[f"{name}:{branch}"] = info.get("masks", info)
    return found


def run_case(case: dict) -> dict:
    extra = case.get("call", {})
    cache = case.get("cache", [])  # the same stack single-process (caches, and quant / compile)
    pipe, call = build(case["model"])
    if cache:
        handle = dit_engine.apply(pipe, *cache)
        reference = conformance.run(pipe, call(**extra))
        reference_masks = masks(handle.summary())
        pipe, call = build(case["model"])  # a fresh pipeline: quant and compile cannot be removed
    else:
        reference = conformance.run(pipe, call(**extra))
        reference_masks = {}
    handle = dit_engine.apply(pipe, *case["parallel"], *cache)
    output = conformance.run(pipe, call(**extra))
    summary = handle.summary()
    result = {
        "max_abs": float((output - reference).abs().max()),
        "hash": hashlib.sha256(output.numpy().tobytes()).hexdigest(),
        "masks": masks(summary),
        "reference_masks": reference_masks,
        "parallel": summary["transforms"].get("shard.torch_distributed", {}),
        "compile": summary["transforms"].get("compile.torch_compile"),
    }
    try:
        handle.remove()
        result["removed"] = True
        plain = conformance.run(pipe, call(**extra))
        if not cache:
            result["after_remove_max_abs"] = float((plain - reference).abs().max())
    except dit_engine.DitEngineError as err:
        result["removed"] = str(err)
    return result


def main() -> None:
    cases_file, out_file = sys.argv[1], sys.argv[2]
    cases = json.loads(open(cases_file).read())
    torch.manual_seed(0)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    results = {}
    for case in cases:
        try:
            results[case["id"]] = run_case(case)
        except Exception as err:  # recorded per case: one broken mode must not hide the others
            results[case["id"]] = {"error": f"{type(err).__name__}: {err}"}
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, results)
    if rank == 0:
        with open(out_file, "w") as f:
            json.dump(everyone, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
