"""GPU check of parallel=: a FLUX.1-dev-size transformer (random weights, bf16) at 1024 x 1024.

Not part of the test suite (it needs a GPU). Run one process for the baseline and torchrun for
Ulysses when the machine has two GPUs:

    python benchmarks/gpu_parallel_check.py                                    # 1 GPU, no parallel
    torchrun --nproc-per-node 2 benchmarks/gpu_parallel_check.py ulysses2      # 2 GPUs
    torchrun --nproc-per-node 2 benchmarks/gpu_parallel_check.py ulysses2 parallel.ulysses_overlap=true
    torchrun --nproc-per-node 2 benchmarks/gpu_parallel_check.py ulysses2 parallel.comm_dtype=fp8

(any further arguments are overrides added to the plan: the overlapped and float8 all-to-all
side by side with the plain one).

Prints one JSON line: mode, ranks, median milliseconds per transformer call over 10 calls after 3
warm-up calls, peak memory, and (parallel) the max abs difference of rank 0's output to the
baseline output saved by the first run (``/tmp/flux_dev_baseline.pt``).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import torch

FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=(16, 56, 56))
BASELINE = "/tmp/flux_dev_baseline.pt"


def main(mode: str, overrides: list[str]) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    import dit_engine

    rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(rank)
    torch.manual_seed(0)
    with torch.device("cuda"):
        transformer = FluxTransformer2DModel(**FLUX_DEV).to(torch.bfloat16).eval()
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None, transformer=transformer)
    handle = dit_engine.apply(pipe, "model=flux", f"parallel={mode}", *overrides) if mode != "none" else None
    g = torch.Generator("cuda").manual_seed(1)
    inputs = dict(
        hidden_states=torch.randn(1, 4096, 64, generator=g, device="cuda", dtype=torch.bfloat16),
        encoder_hidden_states=torch.randn(1, 512, 4096, generator=g, device="cuda", dtype=torch.bfloat16),
        pooled_projections=torch.randn(1, 768, generator=g, device="cuda", dtype=torch.bfloat16),
        timestep=torch.tensor([0.5], device="cuda", dtype=torch.bfloat16),
        guidance=torch.tensor([3.5], device="cuda", dtype=torch.bfloat16),
        img_ids=torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(64.0), torch.arange(64.0), indexing="ij"), -1).reshape(-1, 3).cuda(),
        txt_ids=torch.zeros(512, 3, device="cuda"),
        return_dict=False,
    )
    times = []
    with torch.no_grad():
        for i in range(13):
            torch.cuda.synchronize()
            began = time.perf_counter()
            output = pipe.transformer(**inputs)[0]
            torch.cuda.synchronize()
            if i >= 3:
                times.append(time.perf_counter() - began)
    result = {"mode": mode, "overrides": overrides, "ranks": int(os.environ.get("WORLD_SIZE", "1")), "ms_per_call": 1000 * statistics.median(times),
              "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
    if mode == "none":
        torch.save(output.cpu(), BASELINE)
    elif os.path.exists(BASELINE):
        result["max_abs_vs_baseline"] = float((output.cpu().float() - torch.load(BASELINE).float()).abs().max())
    if handle is not None:
        result["parallel"] = handle.summary()["transforms"]["shard.torch_distributed"]
    if rank == 0:
        print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "none", sys.argv[2:])
