"""Tiny zoo entries: MMDiT image families (Qwen-Image, Z-Image, SD3, AuraFlow, HiDream, PRX, OmniGen)."""

from __future__ import annotations

from dit_engine.testing.conformance import PipelineCase
from dit_engine.testing.zoo import zoo_entry
from dit_engine.testing.zoo._build import embeds, flow_match_scheduler, generator, seeded_module

_TEXT = 6  # text tokens: differs from the image token count so the streams are told apart


def _sd3(variant_config: dict) -> PipelineCase:
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    transformer = seeded_module(SD3Transformer2DModel, sample_size=8, patch_size=2, in_channels=4, num_layers=4,
                                attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                caption_projection_dim=16, pooled_projection_dim=16, out_channels=4, **variant_config)
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=flow_match_scheduler(shift=3.0), vae=None,
                                    text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                    text_encoder_3=None, tokenizer_3=None)

    def call(**extra):
        # 64 px with the default VAE factor 8 -> 8x8 latents -> 16 image tokens (patch 2)
        return dict(prompt_embeds=embeds(1, _TEXT, 16), pooled_prompt_embeds=embeds(1, 16, seed=2),
                    negative_prompt_embeds=embeds(1, _TEXT, 16, seed=3), negative_pooled_prompt_embeds=embeds(1, 16, seed=4),
                    height=64, width=64, num_inference_steps=6, guidance_scale=5.0, output_type="latent",
                    generator=generator(0), **extra)

    return PipelineCase(pipe, call)  # batched CFG: one transformer call per step


@zoo_entry("sd3", adapter="sd3", pipeline="StableDiffusion3Pipeline", note="prompt embeddings, latents out")
def sd3() -> PipelineCase:
    return _sd3({})


@zoo_entry("sd35", adapter="sd3", pipeline="StableDiffusion3Pipeline", note="SD3.5: qk norm, dual attention layers")
def sd35() -> PipelineCase:
    return _sd3({"qk_norm": "rms_norm", "dual_attention_layers": (0,)})
