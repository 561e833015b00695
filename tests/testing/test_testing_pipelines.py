"""Tests for the full tiny pipelines of dit_engine.testing (FLUX, Wan, Qwen-Image): tiny, offline, deterministic diffusers pipelines."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

diffusers = pytest.importorskip("diffusers")

from dit_engine.testing import (  # noqa: E402
    TINY_PROMPT,
    build_tiny_flux_pipeline,
    build_tiny_qwen_image_pipeline,
    build_tiny_wan_pipeline,
    reload_tiny_pipeline,
    save_tiny_flux_pipeline,
    save_tiny_qwen_image_pipeline,
    save_tiny_wan_pipeline,
    tiny_clip_tokenizer,
    tiny_flux_call_kwargs,
    tiny_qwen2_tokenizer,
    tiny_qwen_image_call_kwargs,
    tiny_t5_tokenizer,
    tiny_wan_call_kwargs,
)

TEXTS = [TINY_PROMPT, "A Photo of 2 CATS, sitting!", "naïve café ☕ — ok?", "", "x" * 40]


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class _CallCounter:
    """Counts forward calls of a module (pre-hook) and records the text length of each call."""

    def __init__(self, module: torch.nn.Module):
        self.text_lengths: list[int] = []
        self._handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ehs = kwargs.get("encoder_hidden_states")
        self.text_lengths.append(-1 if ehs is None else ehs.shape[1])

    @property
    def calls(self) -> int:
        return len(self.text_lengths)

    def remove(self) -> None:
        self._handle.remove()


def _encodes_identically(tok_a, tok_b) -> None:
    assert type(tok_a) is type(tok_b)
    assert len(tok_a) == len(tok_b)
    assert tok_a.model_max_length == tok_b.model_max_length
    for attr in ("pad_token_id", "eos_token_id", "bos_token_id", "unk_token_id"):
        assert getattr(tok_a, attr) == getattr(tok_b, attr), attr
    for text in TEXTS:
        assert tok_a(text).input_ids == tok_b(text).input_ids, text
    padded = dict(padding="max_length", max_length=48, truncation=True)
    assert tok_a(TEXTS[:2], **padded).input_ids == tok_b(TEXTS[:2], **padded).input_ids


# ------------------------------------------------------------------------------------------------
# FLUX
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flux():
    return build_tiny_flux_pipeline(seed=0)


@pytest.fixture(scope="module")
def flux_reference(flux):
    return flux(**tiny_flux_call_kwargs()).images


def test_flux_is_a_real_tiny_flux_pipeline(flux):
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5Tokenizer

    assert type(flux) is diffusers.FluxPipeline
    assert isinstance(flux.transformer, diffusers.FluxTransformer2DModel)
    assert isinstance(flux.vae, diffusers.AutoencoderKL)
    assert isinstance(flux.scheduler, diffusers.FlowMatchEulerDiscreteScheduler)
    assert isinstance(flux.text_encoder, CLIPTextModel) and isinstance(flux.tokenizer, CLIPTokenizer)
    assert isinstance(flux.text_encoder_2, T5EncoderModel) and isinstance(flux.tokenizer_2, T5Tokenizer)
    cfg = flux.transformer.config
    assert cfg.in_channels == 4 * flux.vae.config.latent_channels
    assert sum(cfg.axes_dims_rope) == cfg.attention_head_dim
    assert cfg.joint_attention_dim == flux.text_encoder_2.config.d_model
    assert cfg.pooled_projection_dim == flux.text_encoder.config.hidden_size
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(flux, name)
        assert 0 < _params(module) < 400_000, name
        assert not module.training, name
        assert all(p.dtype == torch.float32 for p in module.parameters()), name


def test_flux_runs_and_output_is_finite(flux, flux_reference):
    assert flux_reference.shape == (1, 3, 32, 32)
    assert torch.isfinite(flux_reference).all()
    assert 0.0 <= flux_reference.min() and flux_reference.max() <= 1.0
    assert flux_reference.std() > 0  # not a constant image


def test_flux_one_guidance_distilled_transformer_call_per_step(flux):
    counter = _CallCounter(flux.transformer)
    try:
        flux(**tiny_flux_call_kwargs(num_inference_steps=3))
    finally:
        counter.remove()
    assert counter.calls == 3
    assert counter.text_lengths == [32, 32, 32]  # max_sequence_length T5 tokens


def test_flux_true_cfg_makes_two_calls_per_step(flux):
    counter = _CallCounter(flux.transformer)
    try:
        out = flux(**tiny_flux_call_kwargs(num_inference_steps=2, negative_prompt="blurry", true_cfg_scale=2.0))
    finally:
        counter.remove()
    assert counter.calls == 4
    assert torch.isfinite(out.images).all()


def test_flux_is_deterministic_and_seed_dependent(flux, flux_reference):
    rng_before = torch.get_rng_state()
    again = build_tiny_flux_pipeline(seed=0)
    assert torch.equal(torch.get_rng_state(), rng_before), "builders must not touch the global RNG"
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        assert _same_state(getattr(flux, name), getattr(again, name)), name
    assert torch.equal(again(**tiny_flux_call_kwargs()).images, flux_reference)

    # Shorter runs for the variations.
    def run(pipe, **kw):
        return pipe(**tiny_flux_call_kwargs(num_inference_steps=2, **kw)).images

    short = run(flux)
    assert torch.equal(run(flux), short)  # same kwargs (fresh generator) -> same image
    other = build_tiny_flux_pipeline(seed=1)
    assert not _same_state(flux.transformer, other.transformer)
    assert not torch.equal(run(other), short)
    assert not torch.equal(run(flux, seed=1), short)  # generator seed matters
    assert not torch.equal(run(flux, prompt="a big blue whale"), short)  # prompt matters


@pytest.mark.parametrize("num_layers, num_single_layers", [(2, 4), (3, 1), (1, 0)])
def test_flux_block_lists_have_requested_lengths(num_layers, num_single_layers):
    pipe = build_tiny_flux_pipeline(num_layers=num_layers, num_single_layers=num_single_layers)
    tr = pipe.transformer
    assert isinstance(tr.transformer_blocks, torch.nn.ModuleList)
    assert isinstance(tr.single_transformer_blocks, torch.nn.ModuleList)
    assert len(tr.transformer_blocks) == num_layers
    assert len(tr.single_transformer_blocks) == num_single_layers
    assert tr.config.num_layers == num_layers and tr.config.num_single_layers == num_single_layers
    out = pipe(**tiny_flux_call_kwargs(num_inference_steps=2)).images
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


def test_flux_without_guidance_embeds():
    pipe = build_tiny_flux_pipeline(guidance_embeds=False)
    assert pipe.transformer.config.guidance_embeds is False
    out = pipe(**tiny_flux_call_kwargs(num_inference_steps=2)).images
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


def test_flux_other_sizes():
    pipe = build_tiny_flux_pipeline()
    out = pipe(**tiny_flux_call_kwargs(height=16, width=24, num_inference_steps=2)).images
    assert out.shape == (1, 3, 16, 24)


def assert_reload_close(reloaded: torch.Tensor, reference: torch.Tensor) -> None:
    """Same output up to kernel rounding (memory alignment of reloaded weights), far below one
    8-bit level: a real round-trip bug (a missing or reordered weight) changes it by far more."""
    torch.testing.assert_close(reloaded, reference, rtol=0, atol=1e-5)


def test_flux_save_pretrained_from_pretrained_round_trip(tmp_path, flux_reference):
    path = save_tiny_flux_pipeline(tmp_path / "flux", seed=0)
    assert (path / "model_index.json").is_file()
    assert (path / "tokenizer" / "tokenizer.json").is_file()
    assert (path / "tokenizer_2" / "tokenizer.json").is_file()

    reloaded = diffusers.FluxPipeline.from_pretrained(path)
    reloaded.set_progress_bar_config(disable=True)
    built = build_tiny_flux_pipeline(seed=0)
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        assert _same_state(getattr(built, name), getattr(reloaded, name)), name
    _encodes_identically(built.tokenizer, reloaded.tokenizer)
    _encodes_identically(built.tokenizer_2, reloaded.tokenizer_2)
    public = lambda cfg: {k: v for k, v in dict(cfg).items() if not k.startswith("_")}  # noqa: E731
    assert public(reloaded.scheduler.config) == public(built.scheduler.config)
    # Weights are bit-identical (above); outputs may differ in the last bits because reloaded
    # tensors sit at other memory alignments, which changes the CPU matmul kernels' rounding.
    assert_reload_close(reloaded(**tiny_flux_call_kwargs()).images, flux_reference)

    # The generic reload helper goes through the same path.
    assert_reload_close(reload_tiny_pipeline(path)(**tiny_flux_call_kwargs()).images, flux_reference)


def test_call_kwargs_are_fresh_and_overridable():
    a, b = tiny_flux_call_kwargs(), tiny_flux_call_kwargs()
    assert a["generator"] is not b["generator"]
    assert torch.equal(torch.randn(4, generator=a["generator"]), torch.randn(4, generator=b["generator"]))
    c = tiny_flux_call_kwargs(num_inference_steps=2, height=16, seed=3)
    assert c["num_inference_steps"] == 2 and c["height"] == 16 and "seed" not in c
    assert c["output_type"] == "pt" and c["prompt"] == TINY_PROMPT
    for kwargs in (tiny_flux_call_kwargs(), tiny_wan_call_kwargs(), tiny_qwen_image_call_kwargs()):
        assert kwargs["num_inference_steps"] == 8 and kwargs["output_type"] == "pt"


# ------------------------------------------------------------------------------------------------
# Tokenizers
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("factory", [tiny_clip_tokenizer, tiny_t5_tokenizer, tiny_qwen2_tokenizer])
def test_tokenizers_round_trip_through_disk(tmp_path, factory):
    tok = factory()
    tok.save_pretrained(tmp_path)
    _encodes_identically(tok, type(tok).from_pretrained(tmp_path))
    from transformers import AutoTokenizer

    _encodes_identically(tok, AutoTokenizer.from_pretrained(tmp_path))


def test_tokenizers_are_character_level_with_expected_specials():
    clip = tiny_clip_tokenizer()
    assert clip.convert_ids_to_tokens(clip("a cat").input_ids) == [
        "<|startoftext|>", "a</w>", "c", "a", "t</w>", "<|endoftext|>"
    ]
    t5 = tiny_t5_tokenizer()
    assert t5.convert_ids_to_tokens(t5("a cat").input_ids) == ["\u2581a", "\u2581c", "a", "t", "</s>"]
    assert t5.pad_token_id == 0 and t5.eos_token_id == 1
    for tok in (clip, t5, tiny_qwen2_tokenizer()):  # every id fits the tiny embedding tables
        assert all(0 <= i < len(tok) for ids in tok(TEXTS).input_ids for i in ids)


def test_qwen2_tokenizer_template_prefix_is_34_tokens():
    """QwenImagePipeline drops exactly 34 template tokens (prompt_template_encode_start_idx)."""
    tok = tiny_qwen2_tokenizer()
    pipe_template = (
        "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text,"
        " spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n"
    )
    assert len(tok(pipe_template).input_ids) == 34
    ids = tok(pipe_template + TINY_PROMPT + "<|im_end|>\n").input_ids
    assert tok.decode(ids[34:]) == TINY_PROMPT + "<|im_end|>\n"


# ------------------------------------------------------------------------------------------------
# Wan 2.1
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wan():
    return build_tiny_wan_pipeline(seed=0)


def _wan_kwargs(**overrides):
    return tiny_wan_call_kwargs(**{"num_inference_steps": 3, **overrides})


def test_wan_runs_with_separate_cond_uncond_calls(wan):
    assert type(wan) is diffusers.WanPipeline
    assert len(wan.transformer.blocks) == 4
    for name in ("transformer", "vae", "text_encoder"):
        assert 0 < _params(getattr(wan, name)) < 400_000, name
    counter = _CallCounter(wan.transformer)
    try:
        frames = wan(**_wan_kwargs()).frames
    finally:
        counter.remove()
    assert frames.shape == (1, 9, 3, 32, 32)
    assert torch.isfinite(frames).all()
    assert counter.calls == 2 * 3  # guidance_scale > 1: cond + uncond per step
    # No CFG -> one call per step.
    counter = _CallCounter(wan.transformer)
    try:
        wan(**_wan_kwargs(guidance_scale=1.0))
    finally:
        counter.remove()
    assert counter.calls == 3


def test_wan_is_deterministic_and_num_layers(wan):
    ref = wan(**_wan_kwargs()).frames
    assert torch.equal(build_tiny_wan_pipeline(seed=0)(**_wan_kwargs()).frames, ref)
    assert not torch.equal(build_tiny_wan_pipeline(seed=1)(**_wan_kwargs()).frames, ref)
    assert len(build_tiny_wan_pipeline(num_layers=6).transformer.blocks) == 6


def test_wan_round_trip(tmp_path, wan):
    ref = wan(**_wan_kwargs()).frames
    path = save_tiny_wan_pipeline(tmp_path / "wan")
    reloaded = reload_tiny_pipeline(path)
    assert type(reloaded) is diffusers.WanPipeline
    _encodes_identically(wan.tokenizer, reloaded.tokenizer)
    assert_reload_close(reloaded(**_wan_kwargs()).frames, ref)


def test_wan_plain_from_pretrained_round_trip(tmp_path, wan):
    from diffusers.utils import is_accelerate_available

    if not is_accelerate_available():
        pytest.skip(
            "diffusers 0.42.1 cannot from_pretrained WanTransformer3DModel (_keep_in_fp32_modules) without "
            "accelerate; reload_tiny_pipeline() covers this case"
        )
    ref = wan(**_wan_kwargs()).frames
    path = save_tiny_wan_pipeline(tmp_path / "wan")
    reloaded = diffusers.WanPipeline.from_pretrained(path)
    reloaded.set_progress_bar_config(disable=True)
    assert_reload_close(reloaded(**_wan_kwargs()).frames, ref)


# ------------------------------------------------------------------------------------------------
# Qwen-Image
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def qwen():
    return build_tiny_qwen_image_pipeline(seed=0)


def _qwen_kwargs(**overrides):
    return tiny_qwen_image_call_kwargs(**{"num_inference_steps": 3, **overrides})


def test_qwen_image_runs(qwen):
    assert type(qwen) is diffusers.QwenImagePipeline
    assert len(qwen.transformer.transformer_blocks) == 4
    for name in ("transformer", "vae", "text_encoder"):
        assert 0 < _params(getattr(qwen, name)) < 400_000, name
    counter = _CallCounter(qwen.transformer)
    try:
        images = qwen(**_qwen_kwargs()).images
    finally:
        counter.remove()
    assert images.shape == (1, 3, 32, 32)
    assert torch.isfinite(images).all()
    assert counter.calls == 2 * 3  # true CFG: cond + uncond per step
    # The prompt embeddings hold the user prompt only (the 34-token system prefix is dropped).
    n_prompt = len(qwen.tokenizer(TINY_PROMPT + "<|im_end|>\n<|im_start|>assistant\n").input_ids)
    assert counter.text_lengths[0] == n_prompt
    counter = _CallCounter(qwen.transformer)
    try:
        qwen(**_qwen_kwargs(true_cfg_scale=1.0))
    finally:
        counter.remove()
    assert counter.calls == 3


def test_qwen_image_deterministic_and_round_trip(tmp_path, qwen):
    ref = qwen(**_qwen_kwargs()).images
    assert torch.equal(build_tiny_qwen_image_pipeline(seed=0)(**_qwen_kwargs()).images, ref)
    assert not torch.equal(qwen(**_qwen_kwargs(prompt="a big blue whale")).images, ref)
    path = save_tiny_qwen_image_pipeline(tmp_path / "qwen")
    reloaded = diffusers.QwenImagePipeline.from_pretrained(path)
    reloaded.set_progress_bar_config(disable=True)
    _encodes_identically(qwen.tokenizer, reloaded.tokenizer)
    assert_reload_close(reloaded(**_qwen_kwargs()).images, ref)
