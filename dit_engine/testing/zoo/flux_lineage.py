"""Tiny zoo entries: the FLUX lineage (FLUX.1 and its Fill / Kontext / VisualCloze pipelines,
FLUX.2 dev and klein, Chroma, Bria 3.2, Ovis-Image, LongCat-Image).

All but VisualCloze and LongCat take random prompt embeddings; those two encode their prompt
themselves (VisualCloze builds it from its task and content prompts, LongCat's ``encode_prompt``
calls ``len(prompt)`` even when ``prompt_embeds`` are given), so they get the tiny CLIP + T5 and
Qwen2.5-VL text encoders of :mod:`~dit_engine.testing.zoo.flux_pipeline` / :mod:`~dit_engine.testing.zoo.qwen_image_pipeline`.
"""

from __future__ import annotations

import torch

from dit_engine.testing.conformance import PipelineCase
from dit_engine.testing.zoo import zoo_entry
from dit_engine.testing.zoo._build import embeds, flow_match_scheduler, generator, seeded_module
from dit_engine.testing.zoo.flux_pipeline import build_tiny_flux_pipeline
from dit_engine.testing.zoo.qwen_image_pipeline import build_tiny_qwen_image_pipeline

_TEXT = 6  # text tokens: differs from the image token count so the streams are told apart
_DIM = 16  # text embedding width (joint_attention_dim) of the entries fed random embeddings
_STEPS = 6


def _dynamic_scheduler():
    """FLUX-style flow matching with resolution-dependent shift (the pipelines pass ``mu``)."""
    return flow_match_scheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                base_image_seq_len=256, max_image_seq_len=4096)


def _tiny_vae(latent_channels: int = 4):
    """A two-level ``AutoencoderKL`` (``vae_scale_factor`` 2, or 4 for Bria's formula)."""
    from diffusers import AutoencoderKL

    return seeded_module(AutoencoderKL, component=1, in_channels=3, out_channels=3,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         block_out_channels=(8, 16), layers_per_block=1, latent_channels=latent_channels,
                         norm_num_groups=4, sample_size=16, use_quant_conv=False, use_post_quant_conv=False,
                         scaling_factor=0.3611, shift_factor=0.1159)


def _flux_transformer(**config):
    from diffusers import FluxTransformer2DModel

    base = dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16,
                num_attention_heads=2, joint_attention_dim=_DIM, pooled_projection_dim=_DIM, guidance_embeds=True,
                axes_dims_rope=(4, 6, 6))
    return seeded_module(FluxTransformer2DModel, **{**base, **config})


def _flux_embeds(negative: bool = False) -> dict:
    kwargs = dict(prompt_embeds=embeds(1, _TEXT, _DIM), pooled_prompt_embeds=embeds(1, _DIM, seed=2))
    if negative:
        kwargs.update(negative_prompt_embeds=embeds(1, _TEXT, _DIM, seed=3),
                      negative_pooled_prompt_embeds=embeds(1, _DIM, seed=4))
    return kwargs


# --- FLUX.1 ----------------------------------------------------------------------------------


@zoo_entry("flux", adapter="flux", pipeline="FluxPipeline",
           note="tiny CLIP + T5 and VAE (dit_engine.testing.zoo.flux_pipeline), latents out")
def flux() -> PipelineCase:
    pipe = build_tiny_flux_pipeline(num_layers=2, num_single_layers=2)

    def call(**extra):
        # 16 px / VAE factor 2 -> 8x8 latents -> 16 packed tokens; 6 T5 tokens
        return dict(prompt="a tiny red fox", height=16, width=16, num_inference_steps=_STEPS, guidance_scale=3.5,
                    max_sequence_length=_TEXT, output_type="latent", generator=generator(0), **extra)

    # guidance-distilled: one call per step; true CFG (negative prompt) adds the second
    return PipelineCase(pipe, call, cfg_call=lambda: call(negative_prompt="blurry", true_cfg_scale=4.0))


@zoo_entry("flux_fill", adapter="flux", pipeline="FluxFillPipeline",
           note="prompt embeddings, tiny VAE (encodes the masked image), latents out")
def flux_fill() -> PipelineCase:
    from diffusers import FluxFillPipeline

    # transformer input: packed latents (4*4) + packed masked-image latents (4*4) + packed mask (2*2*4)
    pipe = FluxFillPipeline(scheduler=_dynamic_scheduler(), vae=_tiny_vae(4), text_encoder=None, tokenizer=None,
                            text_encoder_2=None, tokenizer_2=None,
                            transformer=_flux_transformer(in_channels=48, out_channels=16))
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1.0

    def call():
        # 16 px / VAE factor 2 -> 8x8 latents -> 16 packed tokens
        return dict(**_flux_embeds(), image=image.clone(), mask_image=mask.clone(), height=16, width=16,
                    num_inference_steps=_STEPS, guidance_scale=30.0, output_type="latent", generator=generator(0))

    return PipelineCase(pipe, call)  # guidance-distilled: one call per step


@zoo_entry("flux_kontext", adapter="flux", pipeline="FluxKontextPipeline",
           note="prompt embeddings, reference image given as latents (no VAE), latents out")
def flux_kontext() -> PipelineCase:
    from diffusers import FluxKontextPipeline

    # without a VAE the pipeline assumes 16 latent channels: packed 64
    pipe = FluxKontextPipeline(scheduler=_dynamic_scheduler(), vae=None, text_encoder=None, tokenizer=None,
                               text_encoder_2=None, tokenizer_2=None, transformer=_flux_transformer(in_channels=64))
    reference = embeds(1, 16, 8, 8, seed=5)  # image latents (16 channels): used as is, no VAE encode

    def call(**extra):
        # 64 px / default VAE factor 8 -> 8x8 latents -> 16 tokens, plus 16 reference-image tokens
        # (max_area: the pipeline otherwise rescales height and width to a 1024² area)
        return dict(image=reference.clone(), height=64, width=64, max_area=64 * 64, num_inference_steps=_STEPS,
                    guidance_scale=2.5, output_type="latent", generator=generator(0), **extra)

    return PipelineCase(pipe, lambda: call(**_flux_embeds()),
                        cfg_call=lambda: call(**_flux_embeds(negative=True), true_cfg_scale=4.0))


@zoo_entry("visualcloze", adapter="flux", pipeline="VisualClozeGenerationPipeline",
           note="tiny CLIP + T5 and VAE (it encodes its own task prompt), 8 px grid images, latents out")
def visualcloze() -> PipelineCase:
    from diffusers import VisualClozeGenerationPipeline
    from PIL import Image

    base = build_tiny_flux_pipeline(num_layers=0, num_single_layers=0).components
    # FLUX.1-Fill layout on the tiny FLUX VAE (16 latent channels, factor 2): latents 64 +
    # masked-image latents 64 + packed mask 2*2*4
    transformer = _flux_transformer(in_channels=144, out_channels=64, joint_attention_dim=32, pooled_projection_dim=32)
    pipe = VisualClozeGenerationPipeline(
        scheduler=_dynamic_scheduler(), vae=base["vae"], text_encoder=base["text_encoder"], tokenizer=base["tokenizer"],
        text_encoder_2=base["text_encoder_2"], tokenizer_2=base["tokenizer_2"], transformer=transformer, resolution=8)

    def grid():
        cell = lambda v: Image.new("RGB", (8, 8), (v, 255 - v, v // 2))  # noqa: E731
        return [[cell(20), cell(200)], [cell(90), None]]  # one in-context example, one query with its target

    def call():
        return dict(task_prompt="depth to photo", content_prompt="a lake", image=grid(), num_inference_steps=_STEPS,
                    guidance_scale=30.0, max_sequence_length=_TEXT, output_type="latent", generator=generator(0))

    return PipelineCase(pipe, call)  # guidance-distilled (FLUX.1-Fill): one call per step


# --- FLUX.2 ----------------------------------------------------------------------------------


def _flux2_transformer(guidance_embeds: bool):
    from diffusers import Flux2Transformer2DModel

    return seeded_module(Flux2Transformer2DModel, patch_size=1, in_channels=16, num_layers=2, num_single_layers=2,
                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=_DIM,
                         timestep_guidance_channels=32, axes_dims_rope=(4, 4, 4, 4), guidance_embeds=guidance_embeds)


def _flux2_vae():
    """A two-level ``AutoencoderKLFlux2`` (factor 2; 4 latent channels, 16 after its 2x2 patchify,
    matching the transformer's ``in_channels``): klein reads its batch-norm statistics even for
    latent output."""
    from diffusers import AutoencoderKLFlux2

    return seeded_module(AutoencoderKLFlux2, component=1, in_channels=3, out_channels=3,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                         sample_size=16, use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=False)


def _flux2_call(size: int, **extra) -> dict:
    return dict(prompt_embeds=embeds(1, _TEXT, _DIM), height=size, width=size, num_inference_steps=_STEPS,
                output_type="latent", generator=generator(0), **extra)


@zoo_entry("flux2", adapter="flux2", pipeline="Flux2Pipeline", note="prompt embeddings, no VAE, latents out")
def flux2() -> PipelineCase:
    from diffusers import Flux2Pipeline

    pipe = Flux2Pipeline(scheduler=_dynamic_scheduler(), vae=None, text_encoder=None, tokenizer=None,
                         transformer=_flux2_transformer(guidance_embeds=True))
    # guidance-distilled: guidance is a transformer input, one call per step
    # 64 px / default VAE factor 8 / 2x2 patchify -> 4x4 = 16 image tokens
    return PipelineCase(pipe, lambda: _flux2_call(64, guidance_scale=4.0))


@zoo_entry("flux2_klein", adapter="flux2", pipeline="Flux2KleinPipeline",
           note="prompt embeddings, tiny VAE (only its batch-norm statistics are read), latents out")
def flux2_klein() -> PipelineCase:
    from diffusers import Flux2KleinPipeline

    pipe = Flux2KleinPipeline(scheduler=_dynamic_scheduler(), vae=_flux2_vae(), text_encoder=None, tokenizer=None,
                              transformer=_flux2_transformer(guidance_embeds=False), is_distilled=False)
    # the base (non step-distilled) klein runs separate cond / uncond calls when guidance > 1;
    # 16 px / VAE factor 2 / 2x2 patchify -> 4x4 = 16 image tokens
    return PipelineCase(pipe, lambda: _flux2_call(16, guidance_scale=1.0),
                        cfg_call=lambda: _flux2_call(16, guidance_scale=4.0,
                                                     negative_prompt_embeds=embeds(1, _TEXT, _DIM, seed=3)))


# --- FLUX.1 derivatives ----------------------------------------------------------------------


@zoo_entry("chroma", adapter="chroma", pipeline="ChromaPipeline", note="prompt embeddings, no VAE, latents out")
def chroma() -> PipelineCase:
    from diffusers import ChromaPipeline, ChromaTransformer2DModel

    transformer = seeded_module(ChromaTransformer2DModel, patch_size=1, in_channels=16, num_layers=2,
                                num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
                                joint_attention_dim=_DIM, axes_dims_rope=(4, 6, 6), approximator_num_channels=8,
                                approximator_hidden_dim=16, approximator_layers=1)
    pipe = ChromaPipeline(scheduler=_dynamic_scheduler(), vae=None, text_encoder=None, tokenizer=None,
                          transformer=transformer)

    def call(guidance: float):
        # 64 px / default VAE factor 8 -> 8x8 latents -> 16 packed tokens
        return dict(prompt_embeds=embeds(1, _TEXT, _DIM), prompt_attention_mask=torch.ones(1, _TEXT),
                    negative_prompt_embeds=embeds(1, _TEXT, _DIM, seed=3),
                    negative_prompt_attention_mask=torch.ones(1, _TEXT), height=64, width=64,
                    num_inference_steps=_STEPS, guidance_scale=guidance, output_type="latent", generator=generator(0))

    return PipelineCase(pipe, lambda: call(1.0), cfg_call=lambda: call(4.0))  # separate cond / uncond calls


@zoo_entry("bria", adapter="bria", pipeline="BriaPipeline",
           note="prompt embeddings, tiny VAE (the pipeline reads its config), latents out")
def bria() -> PipelineCase:
    from diffusers import BriaPipeline, BriaTransformer2DModel

    transformer = seeded_module(BriaTransformer2DModel, patch_size=1, in_channels=16, num_layers=2,
                                num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
                                joint_attention_dim=_DIM, axes_dims_rope=(0, 4, 4))
    pipe = BriaPipeline(transformer=transformer, scheduler=flow_match_scheduler(), vae=_tiny_vae(4),
                        text_encoder=None, tokenizer=None)

    def call():
        # Bria's VAE factor is 2 ** len(block_out_channels) = 4 and it packs 2x2 on top of twice
        # that grid: 16 px -> 8x8 latents -> 16 packed tokens
        return dict(prompt_embeds=embeds(1, _TEXT, _DIM), negative_prompt_embeds=embeds(1, _TEXT, _DIM, seed=3),
                    height=16, width=16, num_inference_steps=_STEPS, guidance_scale=5.0, output_type="latent",
                    generator=generator(0))

    return PipelineCase(pipe, call)  # batched CFG: one transformer call per step


@zoo_entry("ovis_image", adapter="ovis_image", pipeline="OvisImagePipeline",
           note="prompt embeddings, no VAE, latents out")
def ovis_image() -> PipelineCase:
    from diffusers import OvisImagePipeline, OvisImageTransformer2DModel

    transformer = seeded_module(OvisImageTransformer2DModel, patch_size=1, in_channels=16, out_channels=16,
                                num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
                                joint_attention_dim=_DIM, axes_dims_rope=(4, 6, 6))
    pipe = OvisImagePipeline(scheduler=_dynamic_scheduler(), vae=None, text_encoder=None, tokenizer=None,
                             transformer=transformer)

    def call(guidance: float):
        # 64 px / default VAE factor 8 -> 8x8 latents -> 16 packed tokens
        return dict(prompt_embeds=embeds(1, _TEXT, _DIM), negative_prompt=None,
                    negative_prompt_embeds=embeds(1, _TEXT, _DIM, seed=3), height=64, width=64,
                    num_inference_steps=_STEPS, guidance_scale=guidance, output_type="latent", generator=generator(0))

    return PipelineCase(pipe, lambda: call(1.0), cfg_call=lambda: call(5.0))  # separate cond / uncond calls


@zoo_entry("longcat_image", adapter="longcat_image", pipeline="LongCatImagePipeline",
           note="tiny Qwen2.5-VL text encoder (tiny_qwen_image), prompt cut to 6 tokens, no rewrite, no VAE, latents out")
def longcat_image() -> PipelineCase:
    from diffusers import LongCatImagePipeline, LongCatImageTransformer2DModel

    qwen = build_tiny_qwen_image_pipeline(num_layers=1)  # for its text encoder and tokenizer (hidden 32)
    # the pipeline hard-codes 16 latent channels: packed 64
    transformer = seeded_module(LongCatImageTransformer2DModel, patch_size=1, in_channels=64, num_layers=2,
                                num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
                                joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6))
    pipe = LongCatImagePipeline(scheduler=_dynamic_scheduler(), vae=None, text_encoder=qwen.text_encoder,
                                tokenizer=qwen.tokenizer, text_processor=None, transformer=transformer)
    pipe.tokenizer_max_length = _TEXT  # text tokens fed to the transformer (512 in the real pipeline)

    def call(**extra):
        # 64 px / default VAE factor 8 -> 8x8 latents -> 16 packed tokens
        return dict(prompt="a tiny red fox", height=64, width=64, num_inference_steps=_STEPS,
                    enable_prompt_rewrite=False, output_type="latent", generator=generator(0), **extra)

    # separate cond / uncond calls when guidance > 1
    return PipelineCase(pipe, lambda: call(guidance_scale=1.0),
                        cfg_call=lambda: call(guidance_scale=4.5, negative_prompt="blurry"))
