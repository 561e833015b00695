"""Tiny zoo entries: other video DiTs (HunyuanVideo, HunyuanVideo-1.5, Mochi, LTX-Video, Allegro,
Kandinsky 5, Cosmos).

All take prompt embeddings (text encoders and tokenizers left out) and return latents, so no VAE is
built except where the pipeline reads one unguarded in ``__init__`` (HunyuanVideo-1.5).
"""

from __future__ import annotations

import torch

from dit_engine.testing.conformance import PipelineCase
from dit_engine.testing.zoo import zoo_entry
from dit_engine.testing.zoo._build import embeds, flow_match_scheduler, generator, seeded_module

_TEXT = 6  # text tokens: differs from the image token count so the streams are told apart
_STEPS = 6


def _mask(*shape: int, dtype=torch.float32) -> torch.Tensor:
    return torch.ones(*shape, dtype=dtype)


# -- HunyuanVideo ---------------------------------------------------------------------------------

@zoo_entry("hunyuan_video", adapter="hunyuan_video", pipeline="HunyuanVideoPipeline",
           note="prompt embeddings, latents out; true CFG through true_cfg_scale + negative embeddings")
def hunyuan_video() -> PipelineCase:
    from diffusers import HunyuanVideoPipeline, HunyuanVideoTransformer3DModel

    transformer = seeded_module(HunyuanVideoTransformer3DModel, in_channels=4, out_channels=4, num_attention_heads=2,
                                attention_head_dim=8, num_layers=2, num_single_layers=2, num_refiner_layers=1,
                                patch_size=2, patch_size_t=1, guidance_embeds=True, text_embed_dim=16,
                                pooled_projection_dim=8, rope_axes_dim=(2, 2, 4))
    pipe = HunyuanVideoPipeline(transformer=transformer, scheduler=flow_match_scheduler(shift=7.0), vae=None,
                                text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)

    def call(**extra):
        # no VAE: factors 8 (spatial) and 4 (temporal); 64 px, 5 frames -> 2 x 8 x 8 latents -> 32 tokens (patch 2)
        return dict(prompt_embeds=embeds(1, _TEXT, 16), pooled_prompt_embeds=embeds(1, 8, seed=2),
                    prompt_attention_mask=_mask(1, _TEXT), height=64, width=64, num_frames=5,
                    num_inference_steps=_STEPS, guidance_scale=6.0, output_type="latent", generator=generator(0),
                    **extra)

    def cfg_call():  # guidance-distilled: the negative branch only with true_cfg_scale > 1
        return call(true_cfg_scale=4.0, negative_prompt_embeds=embeds(1, _TEXT, 16, seed=3),
                    negative_pooled_prompt_embeds=embeds(1, 8, seed=4), negative_prompt_attention_mask=_mask(1, _TEXT))

    return PipelineCase(pipe, call, cfg_call=cfg_call)


# -- HunyuanVideo-1.5 -----------------------------------------------------------------------------

@zoo_entry("hunyuan_video15", adapter="hunyuan_video15", pipeline="HunyuanVideo15Pipeline",
           note="prompt embeddings, latents out; tiny VAE (read in __init__), small ByT5 projection "
                "(2048 wide upstream), 4 image-embed tokens instead of 729; CFG guider at 6 (two calls per step)")
def hunyuan_video15() -> PipelineCase:
    from diffusers import AutoencoderKLHunyuanVideo15, HunyuanVideo15Pipeline, HunyuanVideo15Transformer3DModel
    from diffusers.guiders import ClassifierFreeGuidance
    from diffusers.models.transformers.transformer_hunyuan_video15 import HunyuanVideo15ByT5TextProjection

    # in_channels = 2 x latent channels + 1: the pipeline concatenates (latents, condition latents, mask)
    transformer = seeded_module(HunyuanVideo15Transformer3DModel, in_channels=9, out_channels=4, num_attention_heads=2,
                                attention_head_dim=8, num_layers=3, num_refiner_layers=1, mlp_ratio=2.0, patch_size=1,
                                patch_size_t=1, text_embed_dim=16, text_embed_2_dim=8, image_embed_dim=12,
                                rope_axes_dim=(2, 2, 4), target_size=16, task_type="t2v")
    # The ByT5 projection's inner width is hard-coded to 2048 (4.2M parameters); a 16-wide one keeps the case fast.
    transformer.context_embedder_2 = seeded_module(HunyuanVideo15ByT5TextProjection, component=4, in_features=8,
                                                   hidden_size=16, out_features=16)
    vae = seeded_module(AutoencoderKLHunyuanVideo15, component=1, in_channels=3, out_channels=3, latent_channels=4,
                        block_out_channels=(16, 16), layers_per_block=1, spatial_compression_ratio=4,
                        temporal_compression_ratio=2, downsample_match_channel=False, upsample_match_channel=False)
    pipe = HunyuanVideo15Pipeline(transformer=transformer, vae=vae, scheduler=flow_match_scheduler(shift=7.0),
                                  text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                  guider=ClassifierFreeGuidance(guidance_scale=6.0))
    pipe.vision_num_semantic_tokens = 4  # zero (masked) image-embed tokens of text-to-video; 729 upstream

    def call():
        # VAE factors 4 / 2: 16 px, 3 frames -> 2 x 4 x 4 latents -> 32 tokens (patch 1)
        return dict(prompt_embeds=embeds(1, _TEXT, 16), prompt_embeds_mask=_mask(1, _TEXT),
                    prompt_embeds_2=embeds(1, 4, 8, seed=2), prompt_embeds_mask_2=_mask(1, 4),
                    negative_prompt_embeds=embeds(1, _TEXT, 16, seed=3), negative_prompt_embeds_mask=_mask(1, _TEXT),
                    negative_prompt_embeds_2=embeds(1, 4, 8, seed=4), negative_prompt_embeds_mask_2=_mask(1, 4),
                    height=16, width=16, num_frames=3, num_inference_steps=_STEPS, output_type="latent",
                    generator=generator(0))

    # the guider (a pipeline component, guidance 6) makes separate cond / uncond calls: two per step
    return PipelineCase(pipe, call, cfg_call=call)


# -- Mochi / LTX-Video / Allegro (batched CFG) ----------------------------------------------------

@zoo_entry("mochi", adapter="mochi", pipeline="MochiPipeline", note="prompt embeddings, latents out")
def mochi() -> PipelineCase:
    from diffusers import MochiPipeline, MochiTransformer3DModel

    transformer = seeded_module(MochiTransformer3DModel, patch_size=2, num_attention_heads=2, attention_head_dim=8,
                                num_layers=3, pooled_projection_dim=16, in_channels=4, out_channels=None,
                                qk_norm="rms_norm", text_embed_dim=16, time_embed_dim=4, activation_fn="swiglu",
                                max_sequence_length=16)
    pipe = MochiPipeline(transformer=transformer, scheduler=flow_match_scheduler(), vae=None, text_encoder=None,
                         tokenizer=None)

    def call():
        # no VAE: factors 8 / 6; 64 px, 7 frames -> 2 x 8 x 8 latents -> 32 tokens (patch 2)
        return dict(prompt_embeds=embeds(1, _TEXT, 16), prompt_attention_mask=_mask(1, _TEXT, dtype=torch.bool),
                    negative_prompt_embeds=embeds(1, _TEXT, 16, seed=3),
                    negative_prompt_attention_mask=_mask(1, _TEXT, dtype=torch.bool),
                    height=64, width=64, num_frames=7, num_inference_steps=_STEPS, guidance_scale=4.5,
                    output_type="latent", generator=generator(0))

    return PipelineCase(pipe, call)  # batched CFG: one transformer call per step


@zoo_entry("ltx_video", adapter="ltx_video", pipeline="LTXPipeline", note="prompt embeddings, latents out")
def ltx_video() -> PipelineCase:
    from diffusers import LTXPipeline, LTXVideoTransformer3DModel

    transformer = seeded_module(LTXVideoTransformer3DModel, in_channels=4, out_channels=4, patch_size=1, patch_size_t=1,
                                num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16, num_layers=4,
                                qk_norm="rms_norm_across_heads", caption_channels=16)
    pipe = LTXPipeline(transformer=transformer, scheduler=flow_match_scheduler(), vae=None, text_encoder=None,
                       tokenizer=None)

    def call():
        # no VAE: factors 32 / 8; 128 px, 9 frames -> 2 x 4 x 4 latents -> 32 tokens
        return dict(prompt_embeds=embeds(1, _TEXT, 16), prompt_attention_mask=_mask(1, _TEXT),
                    negative_prompt_embeds=embeds(1, _TEXT, 16, seed=3), negative_prompt_attention_mask=_mask(1, _TEXT),
                    height=128, width=128, num_frames=9, num_inference_steps=_STEPS, guidance_scale=3.0,
                    output_type="latent", generator=generator(0))

    return PipelineCase(pipe, call)  # batched CFG: one transformer call per step


@zoo_entry("allegro", adapter="allegro", pipeline="AllegroPipeline", note="prompt embeddings, latents out")
def allegro() -> PipelineCase:
    from diffusers import AllegroPipeline, AllegroTransformer3DModel, EulerAncestralDiscreteScheduler

    transformer = seeded_module(AllegroTransformer3DModel, num_attention_heads=2, attention_head_dim=12, in_channels=4,
                                out_channels=4, num_layers=4, cross_attention_dim=24, sample_width=8, sample_height=8,
                                sample_frames=8, caption_channels=16)
    pipe = AllegroPipeline(transformer=transformer, scheduler=EulerAncestralDiscreteScheduler(), vae=None,
                           text_encoder=None, tokenizer=None)

    def call():
        # no VAE: factors 8 / 4; 64 px, 5 frames -> 2 x 8 x 8 latents -> 32 tokens (patch 2)
        return dict(prompt_embeds=embeds(1, _TEXT, 16), prompt_attention_mask=_mask(1, _TEXT),
                    negative_prompt=None, negative_prompt_embeds=embeds(1, _TEXT, 16, seed=3),
                    negative_prompt_attention_mask=_mask(1, _TEXT), height=64, width=64, num_frames=5,
                    num_inference_steps=_STEPS, guidance_scale=7.5,
                    output_type="latent", generator=generator(0))

    return PipelineCase(pipe, call)  # batched CFG: one transformer call per step


# -- Kandinsky 5 (separate cond / uncond calls) ---------------------------------------------------

def _kandinsky5_transformer(visual_cond: bool):
    from diffusers import Kandinsky5Transformer3DModel

    # heads = model_dim / sum(axes_dims) = 16 / 8 = 2; visual_cond (condition-frame channels) as in the
    # T2V checkpoints, off in the T2I ones
    return seeded_module(Kandinsky5Transformer3DModel, in_visual_dim=4, in_text_dim=16, in_text_dim2=8, time_dim=16,
                         out_visual_dim=4, patch_size=(1, 2, 2), model_dim=16, ff_dim=32, num_text_blocks=1,
                         num_visual_blocks=4, axes_dims=(2, 2, 4), visual_cond=visual_cond, attention_type="regular")


def _kandinsky5_call(**size):
    def text(seed):  # Qwen embeddings, pooled CLIP embedding, cumulative Qwen lengths
        return embeds(1, _TEXT, 16, seed=seed), embeds(1, 8, seed=seed + 1), torch.tensor([0, _TEXT], dtype=torch.int32)

    def call(guidance_scale=1.0):
        qwen, clip, cu_seqlens = text(1)
        kwargs = dict(prompt_embeds_qwen=qwen, prompt_embeds_clip=clip, prompt_cu_seqlens=cu_seqlens,
                      num_inference_steps=_STEPS, guidance_scale=guidance_scale, output_type="latent",
                      generator=generator(0), **size)
        if guidance_scale > 1:
            qwen, clip, cu_seqlens = text(3)
            kwargs.update(negative_prompt_embeds_qwen=qwen, negative_prompt_embeds_clip=clip,
                          negative_prompt_cu_seqlens=cu_seqlens)
        return kwargs

    return call


@zoo_entry("kandinsky5", adapter="kandinsky5", pipeline="Kandinsky5T2VPipeline",
           note="prompt embeddings, latents out")
def kandinsky5() -> PipelineCase:
    from diffusers import Kandinsky5T2VPipeline

    pipe = Kandinsky5T2VPipeline(transformer=_kandinsky5_transformer(True), scheduler=flow_match_scheduler(shift=10.0),
                                 vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    # no VAE: factors 8 / 4; 64 px, 5 frames -> 2 x 8 x 8 latents -> 32 tokens (patch 1x2x2)
    call = _kandinsky5_call(height=64, width=64, num_frames=5)
    return PipelineCase(pipe, call, cfg_call=lambda: call(guidance_scale=5.0))


@zoo_entry("kandinsky5_t2i", adapter="kandinsky5", pipeline="Kandinsky5T2IPipeline",
           note="prompt embeddings, latents out; resolutions list set to 64x64")
def kandinsky5_t2i() -> PipelineCase:
    from diffusers import Kandinsky5T2IPipeline

    pipe = Kandinsky5T2IPipeline(transformer=_kandinsky5_transformer(False), scheduler=flow_match_scheduler(shift=3.0),
                                 vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    pipe.resolutions = [(64, 64)]  # the pipeline snaps to its list of 1024-px-class sizes otherwise
    call = _kandinsky5_call(height=64, width=64)  # 8 x 8 latents -> 16 tokens
    return PipelineCase(pipe, call, cfg_call=lambda: call(guidance_scale=4.0))


# -- Cosmos-Predict2 (separate cond / uncond calls) -----------------------------------------------

class DummySafetyChecker(torch.nn.Module):
    """Test-only stand-in for ``cosmos_guardrail.CosmosSafetyChecker`` (not installed; the Cosmos
    pipelines refuse to run without a checker): passes every prompt and video. ``.to()``, ``device``
    and ``dtype`` are all the pipeline asks of it besides the two checks."""

    def __init__(self):
        super().__init__()
        self.register_buffer("_device_tracker", torch.zeros(1), persistent=False)

    def check_text_safety(self, prompt: str) -> bool:
        return True

    def check_video_safety(self, frames):
        return frames

    @property
    def device(self) -> torch.device:
        return self._device_tracker.device

    @property
    def dtype(self) -> torch.dtype:
        return self._device_tracker.dtype


@zoo_entry("cosmos", adapter="cosmos", pipeline="Cosmos2TextToImagePipeline",
           note="prompt embeddings, latents out; dummy safety checker; no padding-mask channel "
                "(its resize needs torchvision)")
def cosmos() -> PipelineCase:
    from diffusers import Cosmos2TextToImagePipeline, CosmosTransformer3DModel

    # concat_padding_mask=False: the padding-mask resize is torchvision's, absent here (no shim needed)
    transformer = seeded_module(CosmosTransformer3DModel, in_channels=4, out_channels=4, num_attention_heads=2,
                                attention_head_dim=12, num_layers=4, mlp_ratio=2, text_embed_dim=16,
                                adaln_lora_dim=4, max_size=(4, 32, 32), patch_size=(1, 2, 2),
                                rope_scale=(1.0, 4.0, 4.0), concat_padding_mask=False, extra_pos_embed_type=None)
    pipe = Cosmos2TextToImagePipeline(transformer=transformer, scheduler=flow_match_scheduler(use_karras_sigmas=True),
                                      vae=None, text_encoder=None, tokenizer=None, safety_checker=DummySafetyChecker())

    def call(guidance_scale=1.0, **extra):
        # no VAE: factor 8; 64 px -> 8 x 8 latents -> 16 tokens (patch 1x2x2)
        return dict(prompt_embeds=embeds(1, _TEXT, 16), height=64, width=64, num_inference_steps=_STEPS,
                    guidance_scale=guidance_scale, output_type="latent", generator=generator(0), **extra)

    return PipelineCase(pipe, call, cfg_call=lambda: call(7.0, negative_prompt_embeds=embeds(1, _TEXT, 16, seed=3)))
