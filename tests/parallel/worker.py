"""One rank of the multi-process parallel tests (started by torch's launcher from test_parallel.py).

For every case of the JSON case file: the single-process reference (the tiny pipeline, seeded and
identical on every rank, run with the case's cache overrides and no collectives), then the run
with the parallel overrides added; record the max abs difference, the per-branch cache masks of
both runs and a hash of this rank's output. The references are shared out between the ranks (each
computes its part, then every rank receives all of them): a single-process run gives the same
output on any rank. Rank 0 writes the collected results as JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys

import torch
import torch.distributed as dist

import dit_engine
from dit_engine.testing import conformance
from dit_engine.transforms.protocols import HasExactVariant
from dit_engine.testing import (build_tiny_flux_pipeline, build_tiny_ltx_video_pipeline, build_tiny_qwen_image_pipeline,
                                build_tiny_wan_pipeline, tiny_flux_call_kwargs, tiny_ltx_video_call_kwargs,
                                tiny_qwen_image_call_kwargs, tiny_wan_call_kwargs)


def build(model: str):
    torch.manual_seed(0)  # the same pipeline on every rank, whichever cases it built before
    if model == "tiny":
        case = conformance.tiny_model_case(steps=6)
        return case.pipe, case.call
    builders = {
        "flux": (build_tiny_flux_pipeline, tiny_flux_call_kwargs),
        "wan": (build_tiny_wan_pipeline, tiny_wan_call_kwargs),
        "qwen_image": (build_tiny_qwen_image_pipeline, tiny_qwen_image_call_kwargs),
        "ltx_video_full": (build_tiny_ltx_video_pipeline, tiny_ltx_video_call_kwargs),  # T5, VAE: the whole pipeline
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


def psnr(output: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1] (inf when identical)."""
    mse = float(((output.clamp(0, 1) - reference.clamp(0, 1)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def masks(summary: dict) -> dict:
    found = {}
    for name, stats in summary["transforms"].items():
        for branch, info in stats.get("branches", {}).items():
            found[f"{name}:{branch}"] = info.get("masks", info)
    return found


def reference(case: dict) -> dict:
    """The case's single-process output and cache masks (the same stack: caches, quant, compile)."""
    extra, cache = case.get("call", {}), case.get("cache", [])
    pipe, call = build(case["model"])
    if not cache:
        return {"output": conformance.run(pipe, call(**extra)), "masks": {}}
    handle = dit_engine.apply(pipe, *cache)
    return {"output": conformance.run(pipe, call(**extra)), "masks": masks(handle.summary())}


def gather(value) -> list:
    """Every rank's ``value``, in rank order, on every rank."""
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, value)
    return everyone


def share_references(cases: list[dict], rank: int, world: int) -> dict[str, dict]:
    """Every case's reference, each computed on one rank (the costliest first, each to the least
    loaded rank) and gathered on every rank."""
    def cost(case: dict) -> int:
        stack = " ".join(case.get("cache", []))
        return 8 if "compile=" in stack else 2 if stack else 1

    load, mine = [0] * world, {}
    for case in sorted(cases, key=cost, reverse=True):
        owner = load.index(min(load))
        load[owner] += cost(case)
        if owner == rank:
            try:
                mine[case["id"]] = reference(case)
            except Exception as err:  # recorded per case: one broken mode must not hide the others
                mine[case["id"]] = {"error": f"{type(err).__name__}: {err}"}
    return {key: value for part in gather(mine) for key, value in part.items()}


def run_case(case: dict, ref: dict) -> dict:
    if "error" in ref:
        return {"error": f"the single-process reference failed: {ref['error']}"}
    extra = case.get("call", {})
    cache = case.get("cache", [])
    reference = ref["output"]
    pipe, call = build(case["model"])  # a fresh pipeline: quant and compile cannot be removed
    handle = dit_engine.apply(pipe, *case["parallel"], *cache)
    first_block = next(iter(handle.plan.adapter.block_lists(pipe.transformer)))[1][0]
    batches: list[int] = []  # the batch each call of the first block saw on this rank
    watch = first_block.register_forward_pre_hook(
        lambda _module, args, kwargs: batches.append(int((args[0] if args else kwargs["hidden_states"]).shape[0])),
        with_kwargs=True)
    output = conformance.run(pipe, call(**extra))
    watch.remove()
    summary = handle.summary()
    lossy = [t for t in handle.transforms if isinstance(t, HasExactVariant) and t.is_lossy()]
    result = {
        "max_abs": float((output - reference).abs().max()),
        "hash": hashlib.sha256(output.numpy().tobytes()).hexdigest(),
        "masks": masks(summary),
        "reference_masks": ref["masks"],
        "parallel": summary["transforms"].get("shard.torch_distributed", {}),
        "compile": summary["transforms"].get("compile.torch_compile"),
        "node": os.environ.get("GROUP_RANK"),  # the launcher ("node") this rank was started by
        "block_batches": batches,
    }
    if lossy:  # float8 communication: how far from one process, and the exact exchange within 1e-4
        result["psnr"] = psnr(output, reference)
        with lossy[0].exact():
            result["exact_max_abs"] = float((conformance.run(pipe, call(**extra)) - reference).abs().max())
    if case.get("requests", 1) == 2:  # a second request starts whole again, after the first one's split
        again = conformance.run(pipe, call(**extra))
        result["second_max_abs"] = float((again - reference).abs().max())
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
    references = share_references(cases, rank, dist.get_world_size())
    results = {}
    for case in cases:
        try:
            results[case["id"]] = run_case(case, references[case["id"]])
        except Exception as err:  # recorded per case: one broken mode must not hide the others
            results[case["id"]] = {"error": f"{type(err).__name__}: {err}"}
    everyone = gather(results)
    if rank == 0:
        with open(out_file, "w") as f:
            json.dump(everyone, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
