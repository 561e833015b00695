"""One rank of test_vae_parallel.py (started by torch's launcher on gloo): every VAE case of
:data:`CASES` split over the ranks by :class:`~dit_engine.parallel.vae.VaeParallel`, against the
single-process decode and encode of the same seeded VAE, then the refusals. Rank 0 writes every
rank's results as JSON to ``sys.argv[1]``.

The VAEs are small but structurally complete (two or more resolution levels, GroupNorm with
several groups, mid-block attention, strided downsampling, LTX's noise injection and timestep
conditioning, Wan 2.2's residual blocks and patchify, attention blocks outside the mid blocks).
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch import nn

from dit_engine.errors import DitEngineError
from dit_engine.parallel.collectives import CollectiveStats, SequenceGroup
from dit_engine.parallel.vae import VaeParallel


def build(kind: str) -> nn.Module:
    """A small VAE of ``kind``, seeded: the same weights on every rank."""
    from diffusers import (
        AutoencoderKL,
        AutoencoderKLFlux2,
        AutoencoderKLHunyuanVideo,
        AutoencoderKLLTXVideo,
        AutoencoderKLQwenImage,
        AutoencoderKLWan,
    )

    torch.manual_seed(0)
    wan = {"base_dim": 4, "z_dim": 4, "dim_mult": [1, 2, 2], "num_res_blocks": 1, "temperal_downsample": [False, True],
           "latents_mean": [0.0] * 4, "latents_std": [1.0] * 4}
    if kind == "kl":  # three levels: two stride-2 downsamples, GroupNorm in 4 groups, mid-block attention
        vae = AutoencoderKL(latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 3,
                            up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16),
                            layers_per_block=1, norm_num_groups=4)
    elif kind == "kl_attn":  # attention blocks outside the mid blocks, in the encoder and the decoder
        vae = AutoencoderKL(latent_channels=4,
                            down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D", "DownEncoderBlock2D"),
                            up_block_types=("UpDecoderBlock2D", "AttnUpDecoderBlock2D", "UpDecoderBlock2D"),
                            block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=4)
    elif kind == "flux2":
        vae = AutoencoderKLFlux2(latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 2,
                                 up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                                 layers_per_block=1, norm_num_groups=4)
    elif kind == "wan":
        vae = AutoencoderKLWan(**wan)
    elif kind == "wan22":  # residual blocks (AvgDown3D / DupUp3D shortcuts) and a 2x2 patchify
        vae = AutoencoderKLWan(**wan, is_residual=True, patch_size=2, in_channels=12, out_channels=12)
    elif kind == "qwen_image":
        vae = AutoencoderKLQwenImage(**wan)
    elif kind == "ltx":  # LTX 0.9.1-like: noise injection, timestep conditioning, stride-2 conv downsampling
        from dit_engine.testing.zoo.ltx_pipeline import TINY_LTX_VIDEO_VAE

        vae = AutoencoderKLLTXVideo(**TINY_LTX_VIDEO_VAE)
    elif kind == "ltx095":  # LTX 0.9.5-like: space-to-channel downsamplers, residual upsamplers
        vae = AutoencoderKLLTXVideo(latent_channels=8, block_out_channels=(8, 8, 16, 16),
                                    down_block_types=("LTXVideo095DownBlock3D",) * 4,
                                    decoder_block_out_channels=(8, 16, 32), layers_per_block=(1, 1, 1, 1, 1),
                                    decoder_layers_per_block=(1, 1, 1, 1), spatio_temporal_scaling=(True,) * 4,
                                    decoder_spatio_temporal_scaling=(True, True, True),
                                    decoder_inject_noise=(False,) * 4,
                                    downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
                                    upsample_residual=(True, True, True), upsample_factor=(2, 2, 2),
                                    timestep_conditioning=True, patch_size=2)
    elif kind == "hunyuan_video":
        vae = AutoencoderKLHunyuanVideo(latent_channels=4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
                                        norm_num_groups=4)
    else:
        raise KeyError(kind)
    for name, parameter in vae.named_parameters():
        if "per_channel_scale" in name:  # LTX's noise scales start at zero: make the injected noise count
            parameter.data.fill_(0.5)
    return vae.eval()


#: per VAE: the latent it decodes and the image (video) it encodes; row counts the ranks do not
#: divide (tensor_split chunks of uneven length) and, for AutoencoderKL, rows that are not a
#: multiple of its downsampling (the last rank keeps the remainder)
CASES = {
    "kl": {"decode": (2, 4, 10, 9), "encode": (1, 3, 42, 36)},
    "kl_attn": {"decode": (1, 4, 10, 9), "encode": (1, 3, 40, 36)},
    "flux2": {"decode": (1, 4, 7, 8), "encode": (1, 3, 14, 16)},
    "wan": {"decode": (1, 4, 3, 10, 9), "encode": (1, 3, 5, 40, 36)},
    "wan22": {"decode": (1, 4, 2, 10, 9), "encode": (1, 3, 5, 80, 72)},
    "qwen_image": {"decode": (1, 4, 2, 10, 9), "encode": (1, 3, 1, 40, 36)},
    "ltx": {"decode": (1, 8, 2, 7, 5), "encode": (1, 3, 5, 56, 40)},
    "ltx095": {"decode": (1, 8, 2, 7, 5), "encode": (1, 3, 9, 56, 32)},
    "hunyuan_video": {"decode": (1, 4, 2, 7, 6), "encode": (1, 3, 5, 48, 40)},
}


def seeded(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def decode(vae: nn.Module, z: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(1234)  # LTX's noise injection draws from the global generator: the same on every rank
    if getattr(vae.config, "timestep_conditioning", False):
        return vae.decode(z, torch.full((z.shape[0],), 0.05)).sample
    return vae.decode(z).sample


def encode(vae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return vae.encode(x).latent_dist.parameters


def structure(vae: nn.Module) -> list:
    """What installing may touch, per module: class, own forward, hooks, parameters."""
    return [(name, type(m).__name__, "forward" in m.__dict__, len(m._forward_hooks), len(m._forward_pre_hooks),
             sorted(n for n, p in m._parameters.items() if p is not None)) for name, m in vae.named_modules()]


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.shape == b.shape else float("inf")


def run_case(kind: str, group: SequenceGroup) -> dict:
    shapes = CASES[kind]
    vae = build(kind)
    z, x = seeded(shapes["decode"], 1), seeded(shapes["encode"], 2)
    reference_decode, reference_encode = decode(vae, z), encode(vae, x)
    before = structure(vae)
    vae.use_tiling = True  # turned off while installed, restored by remove()
    parallel = VaeParallel(vae, group, encode=True)
    tiling_installed = vae.use_tiling
    rows_seen: list[int] = []
    probe = vae.decoder.conv_in.register_forward_pre_hook(lambda module, args: rows_seen.append(args[0].shape[-2]))
    group.stats.reset()
    decoded = decode(vae, z)
    decode_bytes, decode_calls = group.stats.bytes_sent, group.stats.calls
    group.stats.reset()
    encoded = encode(vae, x)
    encode_bytes = group.stats.bytes_sent
    probe.remove()
    parallel.remove()
    tiling_removed = vae.use_tiling
    vae.use_tiling = False
    return {
        "decode_diff": diff(decoded, reference_decode),
        "encode_diff": diff(encoded, reference_encode),
        "decode_bytes": decode_bytes,
        "decode_calls": decode_calls,
        "encode_bytes": encode_bytes,
        "output_shape": list(decoded.shape),
        "latent_rows": shapes["decode"][-2],
        "rows_seen": rows_seen,
        "restored": structure(vae) == before,
        "tiling": [tiling_installed, tiling_removed],
        "after_remove_diff": diff(decode(vae, z), reference_decode),
    }


def refusal(action) -> str | None:
    """The DitEngineError message ``action`` raised (None when it did not raise)."""
    try:
        action()
    except DitEngineError as err:
        return str(err)
    return None


def run_refusals(group: SequenceGroup) -> dict:
    found = {}

    class AutoencoderTiny(nn.Module):  # a class parallel.vae does not know
        pass

    found["unknown_class"] = refusal(lambda: VaeParallel(AutoencoderTiny(), group))

    vae = build("kl")
    vae.decoder.conv_act = nn.Softmax2d()  # a module class it does not know to be row-local
    found["unknown_module"] = refusal(lambda: VaeParallel(vae, group))
    # refused before installing anything: no forward replaced, no hook left behind
    found["unknown_module_left_clean"] = all(not own and not hooks and not pre
                                             for _, _, own, hooks, pre, _ in structure(vae))

    vae = build("kl")
    vae.decoder.conv_in.padding_mode = "circular"
    found["circular"] = refusal(lambda: VaeParallel(vae, group))

    vae = build("kl")
    parallel = VaeParallel(vae, group)
    # one latent row fewer than ranks: a rank would get none (a 3x3 conv's halo is one row a side)
    found["small_decode"] = refusal(lambda: decode(vae, seeded((1, 4, group.size - 1, 8), 3)))
    found["small_encode"] = refusal(lambda: encode(vae, seeded((1, 3, 8, 16), 4)))  # 2 blocks of 4 rows
    # the VAE still works after a refused call (the split state ended with it)
    z = seeded((1, 4, 8, 8), 5)
    split = decode(vae, z)
    parallel.remove()
    found["works_after_refusal"] = diff(split, decode(vae, z))
    return found


def main() -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    group = SequenceGroup(dist.group.WORLD, CollectiveStats())
    results = {"world": dist.get_world_size(), "rank": dist.get_rank()}
    with torch.no_grad():
        for kind in CASES:
            results[kind] = run_case(kind, group)
        results["refusals"] = run_refusals(group)
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, results)
    if dist.get_rank() == 0:
        with open(sys.argv[1], "w") as out:
            json.dump(everyone, out, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
