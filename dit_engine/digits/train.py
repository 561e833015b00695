"""Train the tiny digits DiT and write ``weights/tiny_dit.{safetensors,json}``.

Usage (maintainer script; needs scikit-learn for the bundled digits data)::

    python -m dit_engine.digits.train [--steps N] [--batch-size B] [--out DIR] [--seed S]

Recipe: rectified flow / flow matching in the convention of diffusers'
``FlowMatchEulerDiscreteScheduler``:

* ``x_t = sigma * noise + (1 - sigma) * x0`` with ``sigma ~ logit-normal(0, 1)``;
* the transformer gets ``timestep = sigma`` in [0, 1] (the pipeline passes
  ``t / 1000`` with ``t = 1000 * sigma``, which is the same number);
* it regresses the velocity ``noise - x0`` with an MSE loss;
* 10 % of the labels are replaced by the null class so that classifier-free
  guidance works at inference.

The 8x8 digits (values 0..16) are scaled to [0, 1], upsampled to 16x16
(bilinear), encoded by the pixel-unshuffle VAE and packed into Flux tokens once
up front. AdamW with warmup + cosine decay, gradient clipping, and an EMA of the
weights (the EMA is what gets saved). The run is deterministic given ``--seed``
on a given machine and torch build.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm

from .model import CONFIG_FILE, DEFAULT_CONFIG, WEIGHTS_DIR, WEIGHTS_FILE, build_components
from .pipeline import TinyDiTPipeline

#: Fraction of training labels replaced by the null class (trains the CFG branch).
LABEL_DROPOUT = 0.1
#: Stored precision: halves the file (fp32 would be ~10 MB) at no visible quality cost.
STORAGE_DTYPE = torch.float16


def load_digit_latents(sample_size: int, vae) -> tuple[torch.Tensor, torch.Tensor]:
    """Return packed latents ``(N, tokens, channels)`` of all sklearn digits, and their labels."""
    from sklearn.datasets import load_digits  # only the trainer needs scikit-learn

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(sample_size, sample_size), mode="bilinear", align_corners=False)
    latents = vae.encode(images.clamp(0, 1))
    return TinyDiTPipeline._pack_latents(latents), torch.tensor(digits.target, dtype=torch.long)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to 10 % of ``peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    steps: int,
    batch_size: int,
    out_dir: Path,
    seed: int,
    lr: float = 1e-3,
    ema_decay: float = 0.999,
    warmup: int = 200,
) -> dict:
    """Run training and write the weights + JSON into ``out_dir``; return the JSON metadata."""
    torch.set_num_threads(2)
    torch.manual_seed(seed)
    config = copy.deepcopy(DEFAULT_CONFIG)
    components = build_components(config)
    transformer, conditioner, vae = components["transformer"], components["conditioner"], components["vae"]
    img_ids = TinyDiTPipeline._prepare_latent_image_ids(
        config["sample_size"] // vae.scale_factor // 2,
        config["sample_size"] // vae.scale_factor // 2,
        "cpu",
        torch.float32,
    )
    txt_ids = torch.zeros(conditioner.num_tokens, 3)

    data, labels = load_digit_latents(config["sample_size"], vae)
    num_examples = data.shape[0]

    modules = torch.nn.ModuleDict({"transformer": transformer, "conditioner": conditioner})
    ema = copy.deepcopy(modules).requires_grad_(False)
    # Biases and norm/embedding tables get no weight decay (the usual AdamW split).
    decay = [p for n, p in modules.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in modules.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.99),
    )

    gen = torch.Generator().manual_seed(seed)
    modules.train()
    losses: list[float] = []
    start = time.perf_counter()
    progress = tqdm(range(steps), desc="train tiny DiT", unit="step", mininterval=2.0)
    for step in progress:
        idx = torch.randint(0, num_examples, (batch_size,), generator=gen)
        x0 = data[idx]
        y = labels[idx].clone()
        y[torch.rand(batch_size, generator=gen) < LABEL_DROPOUT] = conditioner.null_index
        sigma = torch.sigmoid(torch.randn(batch_size, generator=gen))
        noise = torch.randn(x0.shape, generator=gen)
        s = sigma.view(-1, 1, 1)
        x_t = s * noise + (1 - s) * x0

        prompt_embeds, pooled = conditioner(y)
        pred = transformer(
            hidden_states=x_t,
            timestep=sigma,
            guidance=None,
            pooled_projections=pooled,
            encoder_hidden_states=prompt_embeds,
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
        loss = F.mse_loss(pred, noise - x0)

        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(modules.parameters(), 1.0)
        optimizer.step()

        # EMA with a warmup so the average is not dominated by the random init early on.
        d = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), modules.parameters()):
                p_ema.lerp_(p, 1 - d)

        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            progress.set_postfix(loss=f"{sum(losses[-200:]) / len(losses[-200:]):.4f}")
    seconds = time.perf_counter() - start

    final_loss = sum(losses[-200:]) / len(losses[-200:])
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {
        f"{name}.{key}": value.detach().to(STORAGE_DTYPE).contiguous()
        for name, module in ema.items()
        for key, value in module.state_dict().items()
    }
    save_file(state, str(out_dir / WEIGHTS_FILE.name), metadata={"format": "pt"})
    meta = dict(config)
    meta["training"] = {
        "dataset": "sklearn.datasets.load_digits (1797 8x8 images, bilinear-upsampled to 16x16)",
        "objective": "rectified flow: x_t = sigma*noise + (1-sigma)*x0, predict noise - x0, sigma ~ logit-normal(0,1)",
        "label_dropout": LABEL_DROPOUT,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "ema_decay": ema_decay,
        "seed": seed,
        "seconds": round(seconds, 1),
        "final_loss": round(final_loss, 5),
        "final_loss_note": "mean training MSE over the last 200 steps (non-EMA weights)",
        "storage_dtype": str(STORAGE_DTYPE).removeprefix("torch."),
        "parameters": sum(p.numel() for p in modules.parameters()),
        "torch_version": torch.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": f"python -m dit_engine.digits.train --steps {steps} --batch-size {batch_size} --seed {seed} --lr {lr:g}",
    }
    (out_dir / CONFIG_FILE.name).write_text(json.dumps(meta, indent=2) + "\n")
    print(f"trained {steps} steps in {seconds:.0f}s, final loss {final_loss:.4f}; wrote {out_dir}")
    return meta


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps (default: 2000)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128)")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help=f"output folder (default: {WEIGHTS_DIR})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (default: 1e-3)")
    args = parser.parse_args(argv)
    train(args.steps, args.batch_size, args.out, args.seed, lr=args.lr)


if __name__ == "__main__":
    main()
