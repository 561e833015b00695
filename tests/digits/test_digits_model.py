"""Tests of the embedded digits model (``model=tiny``, ``dit_engine.digits``); CPU-only, a few seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dit_engine.digits import (
    CLASS_NAMES,
    ClassConditioner,
    PixelShuffleVAE,
    TinyDiTPipeline,
    UnknownPromptError,
    load_digits_pipeline,
)
from dit_engine.digits.model import WEIGHTS_FILE


@pytest.fixture(scope="module")
def pipe() -> TinyDiTPipeline:
    pipe = load_digits_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_weights_file_is_small():
    assert WEIGHTS_FILE.is_file()
    assert WEIGHTS_FILE.stat().st_size <= 10 * 1024 * 1024


def test_architecture_has_enough_blocks_for_block_caching(pipe):
    cfg = pipe.transformer.config
    assert cfg.num_layers >= 2 and cfg.num_single_layers >= 4
    assert cfg.num_layers + cfg.num_single_layers >= 8
    assert sum(cfg.axes_dims_rope) == cfg.attention_head_dim
    assert (pipe.height, pipe.width) == (16, 16)


def test_generates_every_class_as_tensor(pipe):
    images = pipe(list(CLASS_NAMES), generator=_gen(0), output_type="pt").images
    assert images.shape == (len(CLASS_NAMES), 3, 16, 16)
    assert images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    # Gray replicated to RGB.
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])


def test_pil_and_np_outputs(pipe):
    pil = pipe("three", num_inference_steps=4, generator=_gen(0)).images
    assert len(pil) == 1 and isinstance(pil[0], Image.Image)
    assert pil[0].mode == "RGB" and pil[0].size == (16, 16)
    array = pipe(["one", "two"], num_inference_steps=4, generator=_gen(0), output_type="np").images
    assert isinstance(array, np.ndarray) and array.shape == (2, 16, 16, 3)


def test_same_seed_is_deterministic(pipe):
    a = pipe(["four", "eight"], generator=_gen(123), output_type="pt").images
    b = pipe(["four", "eight"], generator=_gen(123), output_type="pt").images
    c = pipe(["four", "eight"], generator=_gen(124), output_type="pt").images
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_prompt_aliases(pipe):
    ref = pipe("seven", num_inference_steps=4, generator=_gen(5), output_type="pt").images
    for alias in ("7", "SEVEN", " Seven "):
        out = pipe(alias, num_inference_steps=4, generator=_gen(5), output_type="pt").images
        assert torch.equal(out, ref)


def test_num_images_per_prompt_groups_images_by_prompt(pipe):
    out = pipe(["zero", "one"], num_inference_steps=4, num_images_per_prompt=3, generator=_gen(0), output_type="pt")
    assert out.images.shape == (6, 3, 16, 16)


def test_latents_can_be_given_packed_or_unpacked(pipe):
    noise = torch.randn(2, 4, 8, 8, generator=_gen(3))
    a = pipe(["five", "six"], num_inference_steps=4, latents=noise, output_type="pt").images
    b = pipe(["five", "six"], num_inference_steps=4, latents=pipe._pack_latents(noise), output_type="pt").images
    assert torch.equal(a, b)


class _CallCounter:
    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        self.batch_sizes: list[int] = []
        self._handle = module.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.calls += 1
        self.batch_sizes.append(kwargs["hidden_states"].shape[0])

    def remove(self):
        self._handle.remove()


def test_batched_and_separate_cfg_agree_and_call_counts(pipe):
    steps, prompts = 6, ["two", "nine", "zero"]
    counter = _CallCounter(pipe.transformer)
    try:
        batched = pipe(prompts, num_inference_steps=steps, guidance_scale=3.0, generator=_gen(7), output_type="pt")
        assert counter.calls == steps and set(counter.batch_sizes) == {2 * len(prompts)}
        counter.calls, counter.batch_sizes = 0, []
        separate = pipe(
            prompts, num_inference_steps=steps, guidance_scale=3.0, separate_cfg=True, generator=_gen(7), output_type="pt"
        )
        assert counter.calls == 2 * steps and set(counter.batch_sizes) == {len(prompts)}
        counter.calls = 0
        pipe(prompts, num_inference_steps=steps, guidance_scale=1.0, separate_cfg=True, generator=_gen(7))
        assert counter.calls == steps  # no CFG at guidance 1: one call per step
    finally:
        counter.remove()
    torch.testing.assert_close(batched.images, separate.images, atol=1e-4, rtol=0)


def test_guidance_changes_the_output(pipe):
    a = pipe("six", num_inference_steps=6, guidance_scale=1.0, generator=_gen(1), output_type="pt").images
    b = pipe("six", num_inference_steps=6, guidance_scale=4.0, generator=_gen(1), output_type="pt").images
    assert not torch.allclose(a, b)


def test_unknown_prompt_lists_known_prompts(pipe):
    with pytest.raises(UnknownPromptError) as info:
        pipe(["three", "cat"], num_inference_steps=2)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in message
    assert "'cat'" in message
    assert "known prompts: " + ", ".join(CLASS_NAMES) in message


def test_conditioner_shapes_and_null_class():
    cond = ClassConditioner(num_tokens=3, token_dim=8, pooled_dim=5)
    embeds, pooled = cond.encode(["zero", "9"])
    assert embeds.shape == (2, 3, 8) and pooled.shape == (2, 5)
    null_embeds, null_pooled = cond.encode_null(4)
    assert null_embeds.shape == (4, 3, 8) and null_pooled.shape == (4, 5)
    assert not torch.equal(null_pooled[0], pooled[0])


def test_vae_round_trip():
    vae = PixelShuffleVAE()
    assert vae.scale_factor == 2 and vae.latent_channels == 4
    x = torch.rand(3, 1, 16, 16, generator=_gen(0))
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0.0, 1.0
    latents = vae.encode(x)
    assert latents.shape == (3, 4, 8, 8)
    assert latents.min() >= -1 and latents.max() <= 1
    torch.testing.assert_close(vae.decode(latents), x, atol=1e-6, rtol=0)


def test_missing_weights_name_the_retrain_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m dit_engine.digits.train"):
        load_digits_pipeline(weights_dir=tmp_path)


def test_samples_are_recognisable_by_a_digits_classifier(pipe):
    """A logistic regression trained on the real 8x8 digits must recognise the samples."""
    sklearn = pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    clf = LogisticRegression(max_iter=2000).fit(digits.data, digits.target)
    per_class = 3
    prompts = [name for name in CLASS_NAMES for _ in range(per_class)]
    generators = [_gen(1000 + i) for i in range(len(prompts))]
    images = pipe(prompts, generator=generators, output_type="pt").images[:, :1]
    # Back to the dataset's format: 8x8, values 0..16.
    features = (F.avg_pool2d(images, 2) * 16).reshape(len(prompts), 64).numpy()
    accuracy = (clf.predict(features) == np.repeat(np.arange(len(CLASS_NAMES)), per_class)).mean()
    assert accuracy >= 0.7, f"classifier accuracy on generated digits {accuracy:.2f} < 0.70 (sklearn {sklearn.__version__})"
