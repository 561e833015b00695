"""Tiny zoo entries: single-transformer image DiTs (PixArt-α/Σ, Sana, DiT, HunyuanDiT, Lumina2,
CogView3-Plus, CogView4, HunyuanImage-2.1)."""

from __future__ import annotations

import torch

from dit_engine.testing.conformance import PipelineCase
from dit_engine.testing.zoo import zoo_entry
from dit_engine.testing.zoo._build import embeds, flow_match_scheduler, generator, seeded_module

_TEXT = 6  # text tokens: differs from the image token count so the streams are told apart
_STEPS = 6


def _mask(length: int = _TEXT) -> torch.Tensor:
    return torch.ones(1, length, dtype=torch.long)


# -- PixArt-α / Σ ------------------------------------------------------------------------------


def _pixart(pipeline: str, heads: int, alpha: bool) -> PipelineCase:
    import diffusers
    from diffusers import DPMSolverMultistepScheduler, PixArtTransformer2DModel

    inner = heads * 8
    # PixArt-α's 1024 px checkpoint (sample_size 128) feeds resolution and aspect-ratio embeddings:
    # the pipeline only passes them when sample_size == 128, and they need an inner dim divisible by 3.
    transformer = seeded_module(PixArtTransformer2DModel, sample_size=128 if alpha else 8, num_layers=3, patch_size=2,
                                attention_head_dim=8, num_attention_heads=heads, in_channels=4, out_channels=8,
                                cross_attention_dim=inner, caption_channels=16, norm_type="ada_norm_single",
                                use_additional_conditions=alpha)
    pipe = getattr(diffusers, pipeline)(transformer=transformer, scheduler=DPMSolverMultistepScheduler(), vae=None,
                                        text_encoder=None, tokenizer=None)

    def call(**extra):
        # 64 px with the default VAE factor 8 -> 8x8 latents -> 16 image tokens (patch 2)
        return dict(prompt_embeds=embeds(1, _TEXT, 16), prompt_attention_mask=_mask(),
                    negative_prompt_embeds=embeds(1, _TEXT, 16, seed=3), negative_prompt_attention_mask=_mask(),
                    height=64, width=64, use_resolution_binning=False, num_inference_steps=_STEPS,
                    guidance_scale=4.5, negative_prompt=None, output_type="latent", generator=generator(0), **extra)

    return PipelineCase(pipe, call)  # batched CFG: one transformer call per step


@zoo_entry("pixart_alpha", adapter="pixart", pipeline="PixArtAlphaPipeline",
           note="prompt embeddings, latents out; resolution/aspect-ratio conditions on")
def pixart_alpha() -> PipelineCase:
    return _pixart("PixArtAlphaPipeline", heads=3, alpha=True)


@zoo_entry("pixart_sigma", adapter="pixart", pipeline="PixArtSigmaPipeline", note="prompt embeddings, latents out")
def pixart_sigma() -> PipelineCase:
    return _pixart("PixArtSigmaPipeline", heads=2, alpha=False)


# -- Sana --------------------------------------------------------------------------------------


@zoo_entry("sana", adapter="sana", pipeline="SanaPipeline", note="prompt embeddings, latents out")
def sana() -> PipelineCase:
    from diffusers import SanaPipeline, SanaTransformer2DModel

    transformer = seeded_module(SanaTransformer2DModel, in_channels=4, out_channels=4, num_layers=3,
                                num_attention_heads=2, attention_head_dim=8, num_cross_attention_heads=2,
                                cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=16,
                                sample_size=4, patch_size=1)
    pipe = SanaPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                        scheduler=flow_match_scheduler(shift=3.0))

    def call(**extra):
        # no VAE: factor 32, so 128 px -> 4x4 latents -> 16 image tokens (patch 1)
        return dict(prompt_embeds=embeds(1, _TEXT, 16), prompt_attention_mask=_mask(),
                    negative_prompt_embeds=embeds(1, _TEXT, 16, seed=3), negative_prompt_attention_mask=_mask(),
                    height=128, width=128, use_resolution_binning=False, num_inference_steps=_STEPS,
                    guidance_scale=4.5, negative_prompt=None, output_type="latent", generator=generator(0), **extra)

    return PipelineCase(pipe, call)  # batched CFG


# -- DiT (class-conditional) -------------------------------------------------------------------


@zoo_entry("dit", adapter="dit", pipeline="DiTPipeline", note="class labels (no text); one-level tiny VAE decodes")
def dit() -> PipelineCase:
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    transformer = seeded_module(DiTTransformer2DModel, sample_size=8, num_layers=3, patch_size=2,
                                attention_head_dim=8, num_attention_heads=2, in_channels=4, out_channels=8)
    # DiTPipeline always decodes (no latent output): a one-level KL VAE (no resampling, 8x8 out)
    vae = seeded_module(AutoencoderKL, component=1, in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                        block_out_channels=(8,), norm_num_groups=8, sample_size=8)
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler())

    def call(**extra):
        # 8x8 latents -> 16 image tokens (patch 2)
        return dict(class_labels=[207], num_inference_steps=_STEPS, guidance_scale=4.0, output_type="pt",
                    generator=generator(0), **extra)

    return PipelineCase(pipe, call)  # batched CFG (label and null label in one call)


# -- HunyuanDiT --------------------------------------------------------------------------------


@zoo_entry("hunyuandit", adapter="hunyuandit", pipeline="HunyuanDiTPipeline",
           note="prompt embeddings (Bert + T5), latents out")
def hunyuandit() -> PipelineCase:
    from diffusers import DDPMScheduler, HunyuanDiT2DModel, HunyuanDiTPipeline

    # num_layers must be even (U-ViT long skips); the two text streams' lengths sum to text_len + text_len_t5
    transformer = seeded_module(HunyuanDiT2DModel, sample_size=8, num_layers=4, patch_size=2, attention_head_dim=8,
                                num_attention_heads=2, hidden_size=16, in_channels=4, cross_attention_dim=16,
                                cross_attention_dim_t5=16, pooled_projection_dim=8, text_len=3, text_len_t5=3)
    pipe = HunyuanDiTPipeline(vae=None, text_encoder=None, tokenizer=None, transformer=transformer,
                              scheduler=DDPMScheduler(), safety_checker=None, feature_extractor=None,
                              requires_safety_checker=False, text_encoder_2=None, tokenizer_2=None)

    def call(**extra):
        # 64 px / 8 -> 8x8 latents -> 16 image tokens (patch 2); 3 Bert + 3 T5 text tokens
        return dict(prompt_embeds=embeds(1, 3, 16), prompt_attention_mask=_mask(3),
                    negative_prompt_embeds=embeds(1, 3, 16, seed=3), negative_prompt_attention_mask=_mask(3),
                    prompt_embeds_2=embeds(1, 3, 16, seed=5), prompt_attention_mask_2=_mask(3),
                    negative_prompt_embeds_2=embeds(1, 3, 16, seed=6), negative_prompt_attention_mask_2=_mask(3),
                    height=64, width=64, use_resolution_binning=False, num_inference_steps=_STEPS,
                    guidance_scale=5.0, output_type="latent", generator=generator(0), **extra)

    return PipelineCase(pipe, call)  # batched CFG


# -- Lumina-Image 2.0 --------------------------------------------------------------------------


@zoo_entry("lumina2", adapter="lumina2", pipeline="Lumina2Pipeline", note="prompt embeddings, latents out")
def lumina2() -> PipelineCase:
    from diffusers import Lumina2Pipeline, Lumina2Transformer2DModel

    transformer = seeded_module(Lumina2Transformer2DModel, sample_size=8, patch_size=2, in_channels=4, hidden_size=32,
                                num_layers=3, num_refiner_layers=1, num_attention_heads=2, num_kv_heads=1,
                                multiple_of=16, axes_dim_rope=(8, 4, 4), axes_lens=(64, 64, 64), cap_feat_dim=16)
    pipe = Lumina2Pipeline(transformer=transformer, scheduler=flow_match_scheduler(), vae=None, text_encoder=None,
                           tokenizer=None)

    def call(guidance_scale=1.0, **extra):
        # 64 px / 8 -> 8x8 latents -> 16 image tokens (patch 2) after 6 caption tokens
        return dict(prompt_embeds=embeds(1, _TEXT, 16), prompt_attention_mask=_mask(),
                    negative_prompt_embeds=embeds(1, _TEXT, 16, seed=3), negative_prompt_attention_mask=_mask(),
                    height=64, width=64, num_inference_steps=_STEPS, guidance_scale=guidance_scale,
                    output_type="latent", generator=generator(0), **extra)

    # separate cond / uncond calls while guidance_scale > 1 (cfg_trunc_ratio 1: on every step)
    return PipelineCase(pipe, call, cfg_call=lambda: call(guidance_scale=4.0))


# -- CogView3-Plus / CogView4 ------------------------------------------------------------------


@zoo_entry("cogview3plus", adapter="cogview3plus", pipeline="CogView3PlusPipeline", note="prompt embeddings, latents out")
def cogview3plus() -> PipelineCase:
    from diffusers import CogVideoXDDIMScheduler, CogView3PlusPipeline, CogView3PlusTransformer2DModel

    transformer = seeded_module(CogView3PlusTransformer2DModel, patch_size=2, in_channels=4, out_channels=4,
                                num_layers=3, attention_head_dim=8, num_attention_heads=2, text_embed_dim=16,
                                time_embed_dim=16, condition_dim=4, pos_embed_max_size=8, sample_size=8)
    pipe = CogView3PlusPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                                scheduler=CogVideoXDDIMScheduler())

    def call(**extra):
        # 64 px / 8 -> 8x8 latents -> 16 image tokens (patch 2)
        return dict(prompt_embeds=embeds(1, _TEXT, 16), negative_prompt_embeds=embeds(1, _TEXT, 16, seed=3),
                    height=64, width=64, num_inference_steps=_STEPS, guidance_scale=7.0, output_type="latent",
                    generator=generator(0), **extra)

    return PipelineCase(pipe, call)  # batched CFG


@zoo_entry("cogview4", adapter="cogview4", pipeline="CogView4Pipeline", note="prompt embeddings, latents out")
def cogview4() -> PipelineCase:
    from diffusers import CogView4Pipeline, CogView4Transformer2DModel

    transformer = seeded_module(CogView4Transformer2DModel, patch_size=2, in_channels=4, out_channels=4, num_layers=3,
                                attention_head_dim=8, num_attention_heads=2, text_embed_dim=16, time_embed_dim=16,
                                condition_dim=4, pos_embed_max_size=8, sample_size=8, rope_axes_dim=(8, 8))
    scheduler = flow_match_scheduler(base_shift=0.25, max_shift=0.75, base_image_seq_len=256,
                                     use_dynamic_shifting=True, time_shift_type="linear")
    pipe = CogView4Pipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer, scheduler=scheduler)

    def call(guidance_scale=1.0, **extra):
        # 64 px / 8 -> 8x8 latents -> 16 image tokens (patch 2)
        return dict(prompt_embeds=embeds(1, _TEXT, 16), negative_prompt_embeds=embeds(1, _TEXT, 16, seed=3),
                    height=64, width=64, num_inference_steps=_STEPS, guidance_scale=guidance_scale,
                    output_type="latent", generator=generator(0), **extra)

    # separate cond / uncond calls while guidance_scale > 1
    return PipelineCase(pipe, call, cfg_call=lambda: call(guidance_scale=3.5))


# -- HunyuanImage-2.1 --------------------------------------------------------------------------


@zoo_entry("hunyuan_image", adapter="hunyuan_image", pipeline="HunyuanImagePipeline",
           note="prompt embeddings (Qwen2.5-VL + ByT5), latents out; ByT5 projection 16 wide, not 2048")
def hunyuan_image() -> PipelineCase:
    from diffusers import HunyuanImagePipeline, HunyuanImageTransformer2DModel
    from diffusers.guiders import AdaptiveProjectedMixGuidance
    from diffusers.models.transformers.transformer_hunyuanimage import HunyuanImageByT5TextProjection

    transformer = seeded_module(HunyuanImageTransformer2DModel, in_channels=4, out_channels=4, num_attention_heads=2,
                                attention_head_dim=8, num_layers=2, num_single_layers=2, num_refiner_layers=1,
                                patch_size=(1, 1), text_embed_dim=16, text_embed_2_dim=None, rope_axes_dim=(4, 4))
    # Test-only patch: the ByT5 projection's 2048 inner width is hard-coded (4M parameters); build the
    # same class 16 wide and register the ByT5 width, so the glyph tokens still take the real path.
    transformer.context_embedder_2 = seeded_module(HunyuanImageByT5TextProjection, component=1, in_features=8,
                                                   hidden_size=16, out_features=16)
    transformer.register_to_config(text_embed_2_dim=8)
    # the guider makes the cond and uncond calls (CFG on every step, APG from step 2)
    guider = AdaptiveProjectedMixGuidance(guidance_scale=3.5, adaptive_projected_guidance_start_step=2)
    pipe = HunyuanImagePipeline(scheduler=flow_match_scheduler(shift=5.0), vae=None, text_encoder=None, tokenizer=None,
                                text_encoder_2=None, tokenizer_2=None, transformer=transformer, guider=guider)

    def call(**extra):
        # no VAE: factor 32, so 128 px -> 4x4 latents -> 16 image tokens (patch 1); 6 + 4 text tokens
        glyph_mask = torch.tensor([[1, 1, 0, 0]])
        return dict(prompt_embeds=embeds(1, _TEXT, 16), prompt_embeds_mask=_mask(),
                    negative_prompt_embeds=embeds(1, _TEXT, 16, seed=3), negative_prompt_embeds_mask=_mask(),
                    prompt_embeds_2=embeds(1, 4, 8, seed=5), prompt_embeds_mask_2=glyph_mask,
                    negative_prompt_embeds_2=embeds(1, 4, 8, seed=6), negative_prompt_embeds_mask_2=glyph_mask,
                    height=128, width=128, num_inference_steps=_STEPS, output_type="latent",
                    generator=generator(0), **extra)

    # two transformer calls per step either way: CFG is the guider's, not a call argument
    return PipelineCase(pipe, call, cfg_call=call)
