"""Tiny, offline, deterministic 🤗 diffusers pipelines for tests and plugin authors.

Every builder here returns a *real* diffusers pipeline object (``FluxPipeline``, ``WanPipeline``,
``QwenImagePipeline``) whose components are genuine diffusers / transformers classes built from
miniature configs with seeded random weights.  Nothing is downloaded: tokenizers are constructed
from vocabularies built in memory, so the helpers work with ``HF_HUB_OFFLINE=1`` and no network.

The pipelines produce noise, not pictures, but they exercise exactly the same code paths as the
full-size models (text encoding, latent packing, scheduler, transformer blocks, VAE decode), which
is what an inference engine needs to test block-level transforms (caching, compilation, hooks...).

Typical use::

    from dit_engine.testing.pipelines import build_tiny_flux_pipeline, tiny_flux_call_kwargs

    pipe = build_tiny_flux_pipeline(seed=0)
    image = pipe(**tiny_flux_call_kwargs()).images      # (1, 3, 32, 32) float tensor in [0, 1]

Conventions shared by all builders:

* ``seed`` fully determines every weight.  The builders seed each component from ``seed`` inside
  ``torch.random.fork_rng`` so the caller's global RNG state is left untouched.
* All modules are float32, on CPU, in ``eval()`` mode; the progress bar is disabled.
* ``*_call_kwargs()`` return a **fresh** dict on every call, including a freshly seeded
  ``torch.Generator``.  Do not reuse one kwargs dict for two runs: the generator is stateful and
  the second run would draw different initial noise.
* Every pipeline round-trips through ``save_pretrained`` / ``<PipelineClass>.from_pretrained``
  offline and gives bit-identical outputs afterwards (float32 safetensors; tokenizers are saved as
  ``tokenizer.json`` and reload to the same class).  A reloaded pipeline shows its progress bar
  again unless you call ``pipe.set_progress_bar_config(disable=True)``.  Exception: without
  ``accelerate`` installed, diffusers 0.42.1 cannot ``from_pretrained`` a ``WanTransformer3DModel``
  at all (see :func:`reload_tiny_pipeline`, which works either way).
* Timing: a default 8-step call takes ~35-60 ms on one CPU thread.  These models are so small that
  intra-op threading only adds overhead; on a busy machine ``torch.set_num_threads(2)`` can make a
  call 10-50x slower than one thread.
"""

from __future__ import annotations

import contextlib
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "TINY_PROMPT",
    "build_tiny_flux_pipeline",
    "tiny_flux_call_kwargs",
    "save_tiny_flux_pipeline",
    "build_tiny_wan_pipeline",
    "tiny_wan_call_kwargs",
    "save_tiny_wan_pipeline",
    "build_tiny_qwen_image_pipeline",
    "tiny_qwen_image_call_kwargs",
    "save_tiny_qwen_image_pipeline",
    "reload_tiny_pipeline",
    "tiny_clip_tokenizer",
    "tiny_t5_tokenizer",
    "tiny_qwen2_tokenizer",
]

#: Default prompt of every ``*_call_kwargs`` helper.  Short, because the tiny tokenizers are
#: character level (one token per character, roughly).
TINY_PROMPT = "a tiny red fox"

# Per-component seed offsets: component k of a pipeline built with ``seed`` is initialised with
# ``torch.manual_seed(seed * _SEED_STRIDE + k)``, so components get different (but reproducible)
# weights and two different seeds never share a component stream.
_SEED_STRIDE = 16
_TRANSFORMER, _VAE, _TEXT_ENCODER, _TEXT_ENCODER_2 = 0, 1, 2, 3


@contextlib.contextmanager
def _seeded(seed: int, component: int) -> Iterator[None]:
    """Seed torch for one component without disturbing the caller's RNG state."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * _SEED_STRIDE + component)
        yield


def _finish(module: torch.nn.Module) -> torch.nn.Module:
    # Weights are created in float32 already; a ``.to(dtype)`` here would only make diffusers warn.
    return module.eval()


def _generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def _save(pipe: Any, path: str | Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(path))
    return path


# ------------------------------------------------------------------------------------------------
# Tokenizers built in memory
# ------------------------------------------------------------------------------------------------
def _byte_level_alphabet() -> list[str]:
    """The 256 printable stand-ins that GPT-2 style byte-level BPE uses for raw bytes, sorted."""
    from tokenizers.pre_tokenizers import ByteLevel

    return sorted(ByteLevel.alphabet())


def _ascii_alphabet() -> list[str]:
    """Printable ASCII without whitespace (T5 / UMT5 handle spaces with the ``▁`` metaspace)."""
    return [c for c in string.printable if not c.isspace()]


def tiny_clip_tokenizer(model_max_length: int = 77):
    """Build a character-level ``CLIPTokenizer`` from an in-memory vocabulary.

    Vocabulary (514 tokens): ``<|startoftext|>`` (id 0), ``<|endoftext|>`` (id 1, also the pad and
    unk token), then every byte-level symbol twice, plain and with CLIP's ``</w>`` end-of-word
    suffix.  No BPE merges, so every character is one token and ``</w>`` marks the last character of
    a word.  Any text encodes without unknown tokens (CLIP lowercases and maps to bytes first).

    Pitfall: CLIP's text model finds its pooled token via ``eos_token_id``; the tiny CLIP text
    encoder is configured with ``bos_token_id=0, eos_token_id=1, pad_token_id=1`` to match.
    Saving writes ``tokenizer.json`` (+ config); ``CLIPTokenizer.from_pretrained`` reloads it
    offline and encodes identically.
    """
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    alphabet = _byte_level_alphabet()
    for symbol in alphabet:
        vocab[symbol] = len(vocab)
    for symbol in alphabet:
        vocab[symbol + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


def tiny_t5_tokenizer(model_max_length: int = 512):
    """Build a character-level Unigram ``T5Tokenizer`` (the fast, ``tokenizers``-backed class).

    Vocabulary (192 tokens): ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, the metaspace ``▁`` 3, then every
    printable non-space ASCII character, plain and prefixed with ``▁`` (word start).  Word-start
    pieces score higher, so ``"a cat"`` encodes as ``▁a ▁c a t </s>``.  Characters outside ASCII
    become ``<unk>``.  ``extra_ids=0``: no ``<extra_id_*>`` sentinels (they would push token ids past
    the tiny embedding table).  Used for both T5 (FLUX) and UMT5 (Wan): diffusers only needs
    ``pad``/``eos`` semantics and ``model_max_length``.
    """
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    alphabet = _ascii_alphabet()
    pieces += [(c, -3.0) for c in alphabet]
    pieces += [("\u2581" + c, -2.5) for c in alphabet]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)


_QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


# Words of ``QwenImagePipeline.prompt_template_encode`` (and the chat roles).  ``\u0120`` is the
# byte-level stand-in for a leading space.
_QWEN_TEMPLATE_WORDS = ("system", "user", "assistant", "Describe") + tuple(
    "\u0120" + word
    for word in (
        "the image by detailing color shape size texture quantity text spatial relationships of objects and"
        " background"
    ).split()
)


def tiny_qwen2_tokenizer(model_max_length: int = 1024):
    """Build a byte-level BPE ``Qwen2Tokenizer`` with the Qwen chat special tokens, in memory.

    Vocabulary (372 tokens): ``<|endoftext|>`` (id 0; eos, pad and unk), ``<|im_start|>``,
    ``<|im_end|>``, the vision markers (``<|vision_start|>``, ``<|image_pad|>``...), the 256
    byte-level symbols, and left-to-right BPE merges that build exactly the words of the Qwen-Image
    prompt template (``system``, ``user``, ``assistant``, ``Describe``, `` the``, `` image``...).
    Everything else is one token per byte.  With these merges the template's system prefix is 34
    tokens, the same as with the real Qwen2.5-VL tokenizer, which ``QwenImagePipeline`` relies on
    (``prompt_template_encode_start_idx = 34``).  The specials are registered as special tokens so
    they are never split and survive ``save_pretrained`` / ``from_pretrained``.
    """
    from transformers import Qwen2Tokenizer

    vocab = {tok: i for i, tok in enumerate(_QWEN_SPECIAL_TOKENS)}
    for symbol in _byte_level_alphabet():
        vocab[symbol] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in _QWEN_TEMPLATE_WORDS:
        for i in range(1, len(word)):
            left, right = word[:i], word[i]
            if left + right not in vocab:
                vocab[left + right] = len(vocab)
                merges.append((left, right))
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        model_max_length=model_max_length,
        unk_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    tok.add_special_tokens({"additional_special_tokens": list(_QWEN_SPECIAL_TOKENS[1:])})
    return tok


# ------------------------------------------------------------------------------------------------
# FLUX.1
# ------------------------------------------------------------------------------------------------
_FLUX_HIDDEN = 32  # text-encoder width == joint_attention_dim == pooled_projection_dim
_FLUX_LATENT_CHANNELS = 16  # like FLUX.1; the transformer sees 4 * 16 = 64 packed channels


def build_tiny_flux_pipeline(
    seed: int = 0,
    num_layers: int = 2,
    num_single_layers: int = 4,
    *,
    guidance_embeds: bool = True,
):
    """Build a tiny, fully working ``diffusers.FluxPipeline`` with seeded random weights.

    Components (all float32, CPU, eval):

    * ``transformer``: ``FluxTransformer2DModel`` with ``num_layers`` double-stream blocks
      (``transformer.transformer_blocks``) and ``num_single_layers`` single-stream blocks
      (``transformer.single_transformer_blocks``); 2 heads x ``attention_head_dim=16`` (inner
      dim 32), ``axes_dims_rope=(4, 6, 6)`` (sums to the head dim, each even), ``in_channels=64``
      (``patch_size=1``: 2x2 packing of 16 latent channels), ``joint_attention_dim=32``,
      ``pooled_projection_dim=32``, ``guidance_embeds=True`` by default (FLUX.1-dev style:
      ``guidance_scale`` is fed to the transformer as an embedding, one transformer call per step).
      With ``guidance_embeds=False`` (FLUX.1-schnell style) ``guidance_scale`` is ignored.
      About 167k parameters with the defaults (VAE 49k, CLIP 36k, T5 27k).
    * ``vae``: ``AutoencoderKL`` with ``block_out_channels=(8, 16)`` (so ``vae_scale_factor=2``),
      16 latent channels, no quant convs and FLUX.1's ``scaling_factor``/``shift_factor``.
      Heights and widths must be multiples of ``vae_scale_factor * 2 = 4``.
    * ``text_encoder`` / ``tokenizer``: ``CLIPTextModel`` (hidden 32, 2 layers, 77 positions) and
      :func:`tiny_clip_tokenizer`; it supplies the 32-d pooled prompt embedding.
    * ``text_encoder_2`` / ``tokenizer_2``: ``T5EncoderModel`` (d_model 32, 2 layers) and
      :func:`tiny_t5_tokenizer`; it supplies the token-level prompt embeddings.
    * ``scheduler``: ``FlowMatchEulerDiscreteScheduler`` with FLUX.1-dev's dynamic shifting config.

    With :func:`tiny_flux_call_kwargs` (32x32 pixels -> 16x16 latents -> 64 image tokens, 32 text
    tokens, 8 steps) one call takes tens of milliseconds on a CPU.

    Pitfalls: ``FluxPipeline`` derives ``num_channels_latents`` from ``transformer.in_channels // 4``,
    so the VAE's ``latent_channels`` must be exactly a quarter of it; the RoPE axes must sum to
    ``attention_head_dim``; the CLIP text encoder's ``eos_token_id`` must match the tokenizer's.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    if num_layers < 0 or num_single_layers < 0:
        raise ValueError("num_layers and num_single_layers must be >= 0")

    tokenizer = tiny_clip_tokenizer()
    tokenizer_2 = tiny_t5_tokenizer()

    with _seeded(seed, _TRANSFORMER):
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=4 * _FLUX_LATENT_CHANNELS,
            num_layers=num_layers,
            num_single_layers=num_single_layers,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=_FLUX_HIDDEN,
            pooled_projection_dim=_FLUX_HIDDEN,
            guidance_embeds=guidance_embeds,
            axes_dims_rope=(4, 6, 6),
        )
    with _seeded(seed, _VAE):
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(8, 16),
            layers_per_block=1,
            latent_channels=_FLUX_LATENT_CHANNELS,
            norm_num_groups=4,
            sample_size=32,
            use_quant_conv=False,
            use_post_quant_conv=False,
            scaling_factor=0.3611,
            shift_factor=0.1159,
        )
    with _seeded(seed, _TEXT_ENCODER):
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=_FLUX_HIDDEN,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                max_position_embeddings=tokenizer.model_max_length,
                projection_dim=_FLUX_HIDDEN,
                hidden_act="quick_gelu",
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    with _seeded(seed, _TEXT_ENCODER_2):
        text_encoder_2 = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_2),
                d_model=_FLUX_HIDDEN,
                d_kv=16,
                d_ff=64,
                num_layers=2,
                num_heads=2,
                relative_attention_num_buckets=8,
                relative_attention_max_distance=32,
                feed_forward_proj="gated-gelu",
                is_encoder_decoder=False,
                use_cache=False,
                pad_token_id=tokenizer_2.pad_token_id,
                eos_token_id=tokenizer_2.eos_token_id,
            )
        )
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=_finish(vae),
        text_encoder=_finish(text_encoder),
        tokenizer=tokenizer,
        text_encoder_2=_finish(text_encoder_2),
        tokenizer_2=tokenizer_2,
        transformer=_finish(transformer),
        image_encoder=None,
        feature_extractor=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_flux_call_kwargs(**overrides: Any) -> dict[str, Any]:
    """Call kwargs for a fast, deterministic run of :func:`build_tiny_flux_pipeline` pipelines.

    Defaults: ``prompt=TINY_PROMPT``, ``height=width=32`` (multiples of 4 are required; 32 px gives
    16x16 latents, i.e. 64 packed image tokens), ``num_inference_steps=8``, ``guidance_scale=3.5``,
    ``max_sequence_length=32`` (T5 tokens fed to the transformer), ``output_type="pt"`` (images are
    a ``(1, 3, H, W)`` float tensor in ``[0, 1]``) and ``generator`` seeded with 0.

    ``overrides`` replace or add keys; ``seed=<int>`` is accepted as a shorthand that replaces the
    generator with one seeded from it.  A fresh dict (and generator) is returned on every call: do
    not reuse one dict for two runs.  For separate cond/uncond transformer calls per step pass
    ``negative_prompt="..."`` and ``true_cfg_scale > 1``.
    """
    seed = overrides.pop("seed", 0)
    kwargs: dict[str, Any] = dict(
        prompt=TINY_PROMPT,
        height=32,
        width=32,
        num_inference_steps=8,
        guidance_scale=3.5,
        max_sequence_length=32,
        output_type="pt",
        generator=_generator(seed),
    )
    kwargs.update(overrides)
    return kwargs


def save_tiny_flux_pipeline(path: str | Path, seed: int = 0, **build_kwargs: Any) -> Path:
    """Build :func:`build_tiny_flux_pipeline` (``seed``, ``build_kwargs``) and ``save_pretrained`` it.

    Returns ``path`` as a ``Path``.  ``diffusers.FluxPipeline.from_pretrained(path)`` reloads it
    offline (``HF_HUB_OFFLINE=1``) with identical weights, tokenizers and scheduler, about 1 MB on
    disk.
    """
    return _save(build_tiny_flux_pipeline(seed=seed, **build_kwargs), path)


# ------------------------------------------------------------------------------------------------
# Wan 2.1 (text-to-video)
# ------------------------------------------------------------------------------------------------
_WAN_TEXT_DIM = 32


def build_tiny_wan_pipeline(seed: int = 0, num_layers: int = 4):
    """Build a tiny, fully working ``diffusers.WanPipeline`` (Wan 2.1 text-to-video) with seeded weights.

    Components (all float32, CPU, eval):

    * ``transformer``: ``WanTransformer3DModel`` with ``num_layers`` blocks (``transformer.blocks``,
      default 4), 2 heads x ``attention_head_dim=16`` (inner dim 32), ``patch_size=(1, 2, 2)``,
      16 in/out channels, ``text_dim=32``, ``ffn_dim=64``, ``rope_max_seq_len=32``; ~74k parameters
      (VAE 22k, UMT5 27k).
    * ``vae``: ``AutoencoderKLWan`` with ``base_dim=4``, ``z_dim=16``, ``dim_mult=[1, 1, 1, 1]`` and the
      real ``temperal_downsample=[False, True, True]``: 8x spatial, 4x temporal compression, exactly
      like Wan 2.1, so heights/widths must be multiples of 16 and ``num_frames = 4k + 1``.
      ``latents_mean``/``latents_std`` are 0/1 (the real statistics are meaningless for random weights).
    * ``text_encoder`` / ``tokenizer``: ``UMT5EncoderModel`` (d_model 32, 2 layers) and the
      character-level :func:`tiny_t5_tokenizer` (saved and reloaded as ``T5Tokenizer``).
    * ``scheduler``: ``UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
      flow_shift=3.0)``, the scheduler shipped with the Wan 2.1 diffusers checkpoints.
    * ``transformer_2=None``, ``boundary_ratio=None`` (Wan 2.1, a single expert).

    With :func:`tiny_wan_call_kwargs` (``guidance_scale=5.0``) the pipeline makes **two separate
    transformer calls per step**, first the conditional one (inside ``transformer.cache_context("cond")``)
    then the unconditional one (``cache_context("uncond")``), like the real Wan 2.1.

    ``ftfy``: ``diffusers.pipelines.wan.pipeline_wan`` imports ``ftfy`` only when it is installed
    and otherwise skips the ``ftfy.fix_text`` prompt clean-up, so ``WanPipeline`` works without it
    and nothing is patched here.  (Other Wan-family pipelines, e.g. I2V/VACE, may reference ``ftfy``
    unconditionally: install ``ftfy`` for those rather than shimming it.)
    """
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    if num_layers < 1:
        raise ValueError("num_layers must be >= 1")
    tokenizer = tiny_t5_tokenizer()
    z_dim = 16

    with _seeded(seed, _TRANSFORMER):
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=16,
            in_channels=z_dim,
            out_channels=z_dim,
            text_dim=_WAN_TEXT_DIM,
            freq_dim=256,
            ffn_dim=64,
            num_layers=num_layers,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
        )
    with _seeded(seed, _VAE):
        vae = AutoencoderKLWan(
            base_dim=4,
            z_dim=z_dim,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
            latents_mean=[0.0] * z_dim,
            latents_std=[1.0] * z_dim,
        )
    with _seeded(seed, _TEXT_ENCODER):
        text_encoder = UMT5EncoderModel(
            UMT5Config(
                vocab_size=len(tokenizer),
                d_model=_WAN_TEXT_DIM,
                d_kv=16,
                d_ff=64,
                num_layers=2,
                num_heads=2,
                relative_attention_num_buckets=8,
                relative_attention_max_distance=32,
                feed_forward_proj="gated-gelu",
                is_encoder_decoder=False,
                use_cache=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        )
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=3.0,
        num_train_timesteps=1000,
    )
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=_finish(text_encoder),
        vae=_finish(vae),
        scheduler=scheduler,
        transformer=_finish(transformer),
        transformer_2=None,
        boundary_ratio=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_wan_call_kwargs(**overrides: Any) -> dict[str, Any]:
    """Call kwargs for a fast, deterministic run of :func:`build_tiny_wan_pipeline` pipelines.

    Defaults: ``prompt=TINY_PROMPT``, ``negative_prompt="blurry"``, ``height=width=32`` (multiples of
    16), ``num_frames=9`` (3 latent frames; 3 x 2 x 2 = 12 video tokens), ``num_inference_steps=8``,
    ``guidance_scale=5.0`` (> 1: separate cond and uncond transformer calls, 2 per step),
    ``max_sequence_length=32``, ``output_type="pt"`` (``.frames`` is a ``(1, 9, 3, 32, 32)`` tensor
    in ``[0, 1]``), ``generator`` seeded with 0.  ``seed=<int>`` replaces the generator; other
    ``overrides`` replace or add keys.  Returns a fresh dict (and generator) on every call.
    """
    seed = overrides.pop("seed", 0)
    kwargs: dict[str, Any] = dict(
        prompt=TINY_PROMPT,
        negative_prompt="blurry",
        height=32,
        width=32,
        num_frames=9,
        num_inference_steps=8,
        guidance_scale=5.0,
        max_sequence_length=32,
        output_type="pt",
        generator=_generator(seed),
    )
    kwargs.update(overrides)
    return kwargs


def save_tiny_wan_pipeline(path: str | Path, seed: int = 0, **build_kwargs: Any) -> Path:
    """Build :func:`build_tiny_wan_pipeline` and ``save_pretrained`` it to ``path`` (returned as ``Path``).

    ``diffusers.WanPipeline.from_pretrained(path)`` reloads it offline with identical outputs.
    """
    return _save(build_tiny_wan_pipeline(seed=seed, **build_kwargs), path)


# ------------------------------------------------------------------------------------------------
# Qwen-Image
# ------------------------------------------------------------------------------------------------
_QWEN_HIDDEN = 32  # Qwen2.5-VL text hidden size == joint_attention_dim


def _tiny_qwen_text_encoder(tokenizer, hidden: int = _QWEN_HIDDEN):
    """Tiny ``Qwen2_5_VLForConditionalGeneration`` (text and vision towers) matching ``tokenizer``."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    heads = 2
    head_dim = hidden // heads
    # Multimodal RoPE: the (t, h, w) sections must sum to head_dim / 2.
    half = head_dim // 2
    mrope_section = [half - 2 * (half // 3), half // 3, half // 3]
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=2,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=2048,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section},
            bos_token_id=None,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            depth=2,
            hidden_size=16,
            intermediate_size=32,
            num_heads=2,
            out_hidden_size=hidden,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[1],
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    return Qwen2_5_VLForConditionalGeneration(config)


def build_tiny_qwen_image_pipeline(seed: int = 0, num_layers: int = 4):
    """Build a tiny, fully working ``diffusers.QwenImagePipeline`` with seeded random weights.

    Components (all float32, CPU, eval):

    * ``transformer``: ``QwenImageTransformer2DModel`` with ``num_layers`` dual-stream blocks
      (``transformer.transformer_blocks``, default 4), 2 heads x ``attention_head_dim=16``,
      ``axes_dims_rope=(4, 6, 6)``, ``in_channels=64`` (2x2 packing of 16 latent channels),
      ``out_channels=16``, ``patch_size=2``, ``joint_attention_dim=32``, ``guidance_embeds=False``.
    * ``vae``: ``AutoencoderKLQwenImage`` with ``base_dim=8``, ``z_dim=16``, ``dim_mult=[1, 2]``,
      ``temperal_downsample=[False]``: ``vae_scale_factor=2``, so heights and widths must be
      multiples of 4.  ``latents_mean``/``latents_std`` are 0/1.
    * ``text_encoder``: ``Qwen2_5_VLForConditionalGeneration`` (text hidden 32, 2 layers, 2 heads,
      ``mrope_section`` summing to head_dim / 2; a 2-block vision tower that the text-to-image
      pipeline never runs) and ``tokenizer``: :func:`tiny_qwen2_tokenizer`.
    * ``scheduler``: ``FlowMatchEulerDiscreteScheduler`` with Qwen-Image's dynamic-shift config
      (``base_image_seq_len=256``, ``max_image_seq_len=8192``, ``base_shift=0.5``,
      ``max_shift=0.9``, exponential time shift).

    Pitfall: ``QwenImagePipeline`` drops the first ``prompt_template_encode_start_idx = 34`` tokens
    of the templated prompt (the system prompt, which is exactly 34 tokens with the real Qwen
    tokenizer).  A plain character-level tokenizer makes that prefix ~150 tokens, so most of the
    system prompt would leak into the prompt embeddings and ``max_sequence_length`` would cut off the
    user prompt.  :func:`tiny_qwen2_tokenizer` therefore carries BPE merges for exactly the words of
    the template, making the prefix 34 tokens, as with the real tokenizer.
    """
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    if num_layers < 1:
        raise ValueError("num_layers must be >= 1")
    tokenizer = tiny_qwen2_tokenizer()
    z_dim = 16

    with _seeded(seed, _TRANSFORMER):
        transformer = QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=4 * z_dim,
            out_channels=z_dim,
            num_layers=num_layers,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=_QWEN_HIDDEN,
            guidance_embeds=False,
            axes_dims_rope=(4, 6, 6),
        )
    with _seeded(seed, _VAE):
        vae = AutoencoderKLQwenImage(
            base_dim=8,
            z_dim=z_dim,
            dim_mult=[1, 2],
            num_res_blocks=1,
            temperal_downsample=[False],
            latents_mean=[0.0] * z_dim,
            latents_std=[1.0] * z_dim,
        )
    with _seeded(seed, _TEXT_ENCODER):
        text_encoder = _tiny_qwen_text_encoder(tokenizer)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=1.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        shift_terminal=0.02,
        time_shift_type="exponential",
    )
    pipe = QwenImagePipeline(
        scheduler=scheduler,
        vae=_finish(vae),
        text_encoder=_finish(text_encoder),
        tokenizer=tokenizer,
        transformer=_finish(transformer),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_qwen_image_call_kwargs(**overrides: Any) -> dict[str, Any]:
    """Call kwargs for a fast, deterministic run of :func:`build_tiny_qwen_image_pipeline` pipelines.

    Defaults: ``prompt=TINY_PROMPT``, ``negative_prompt="blurry"``, ``true_cfg_scale=4.0`` (true CFG:
    separate cond and uncond transformer calls, 2 per step; pass ``true_cfg_scale=1.0`` or
    ``negative_prompt=None`` for one call per step), ``height=width=32`` (16x16 latents, 64 packed
    image tokens), ``num_inference_steps=8``, ``max_sequence_length=32``, ``output_type="pt"``
    (``.images`` is ``(1, 3, 32, 32)`` in ``[0, 1]``), ``generator`` seeded with 0.  ``seed=<int>``
    replaces the generator.  Returns a fresh dict (and generator) on every call.
    """
    seed = overrides.pop("seed", 0)
    kwargs: dict[str, Any] = dict(
        prompt=TINY_PROMPT,
        negative_prompt="blurry",
        true_cfg_scale=4.0,
        height=32,
        width=32,
        num_inference_steps=8,
        max_sequence_length=32,
        output_type="pt",
        generator=_generator(seed),
    )
    kwargs.update(overrides)
    return kwargs


def save_tiny_qwen_image_pipeline(path: str | Path, seed: int = 0, **build_kwargs: Any) -> Path:
    """Build :func:`build_tiny_qwen_image_pipeline` and ``save_pretrained`` it to ``path``.

    ``diffusers.QwenImagePipeline.from_pretrained(path)`` reloads it offline with identical outputs.
    """
    return _save(build_tiny_qwen_image_pipeline(seed=seed, **build_kwargs), path)


# ------------------------------------------------------------------------------------------------
# Reloading saved tiny pipelines
# ------------------------------------------------------------------------------------------------
def _load_diffusers_model_directly(model_cls: Any, folder: Path) -> torch.nn.Module:
    """``from_config`` + ``load_state_dict`` from the safetensors files in ``folder`` (no accelerate)."""
    import json

    from safetensors.torch import load_file

    model = model_cls.from_config(model_cls.load_config(str(folder)))
    index_file = folder / "diffusion_pytorch_model.safetensors.index.json"
    if index_file.is_file():
        shards = sorted(set(json.loads(index_file.read_text())["weight_map"].values()))
    else:
        shards = ["diffusion_pytorch_model.safetensors"]
    state_dict: dict[str, torch.Tensor] = {}
    for shard in shards:
        state_dict.update(load_file(str(folder / shard)))
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def reload_tiny_pipeline(path: str | Path, pipeline_cls: Any = None, **from_pretrained_kwargs: Any):
    """Reload a pipeline saved by a ``save_tiny_*_pipeline`` helper (or any small local pipeline folder).

    ``pipeline_cls`` defaults to the diffusers class named in ``model_index.json`` (``_class_name``).
    The progress bar of the result is disabled.

    Pitfall worked around here: in diffusers 0.42.1, ``ModelMixin.from_pretrained`` refuses to load any
    model class that declares ``_keep_in_fp32_modules`` (e.g. ``WanTransformer3DModel``) when
    ``accelerate`` is not installed ("`low_cpu_mem_usage` cannot be False when `keep_in_fp32_modules`
    is True"; passing ``low_cpu_mem_usage=None`` fails later with ``NameError: accelerate``).  When
    ``accelerate`` is missing, such components are therefore built with ``from_config`` and filled
    with ``load_state_dict`` from the saved safetensors, then handed to ``from_pretrained`` as
    component overrides; everything else goes through the normal ``from_pretrained`` path.  With
    ``accelerate`` installed this is exactly ``pipeline_cls.from_pretrained(path, **kwargs)``.
    """
    import json

    import diffusers
    from diffusers.utils import is_accelerate_available

    path = Path(path)
    index = json.loads((path / "model_index.json").read_text())
    # Resolve the concrete class: ``DiffusionPipeline.from_pretrained`` would ignore a passed
    # component that is an *optional* component of the concrete class (e.g. WanPipeline.transformer)
    # because it checks ``cls._optional_components`` of the class it was called on.
    cls = pipeline_cls or getattr(diffusers, index["_class_name"], diffusers.DiffusionPipeline)
    kwargs = dict(from_pretrained_kwargs)
    if not is_accelerate_available():
        for name, spec in index.items():
            if name.startswith("_") or name in kwargs or not isinstance(spec, list) or len(spec) != 2:
                continue
            library, class_name = spec
            model_cls = getattr(diffusers, class_name, None) if library == "diffusers" else None
            if model_cls is not None and getattr(model_cls, "_keep_in_fp32_modules", None):
                kwargs[name] = _load_diffusers_model_directly(model_cls, path / name)
    pipe = cls.from_pretrained(str(path), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe
