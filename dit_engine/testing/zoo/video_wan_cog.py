"""Tiny zoo entries: the Wan lineage (Wan 2.1 / 2.2, I2V, FLF2V, VACE, SkyReels-V2, ChronoEdit) and the
CogVideoX lineage (CogVideoX 1.0 / 1.5, ConsisID).

Wan-style pipelines run cond and uncond as separate transformer calls: ``call`` uses guidance 1
(one call per step), ``cfg_call`` guidance 5 (two). CogVideoX and ConsisID batch CFG into one call.
Every case feeds random prompt embeddings and returns latents; image-conditioned pipelines get a
tiny VAE (they encode the conditioning frames) and, where the transformer takes CLIP image tokens,
a tiny CLIP vision encoder.
"""

from __future__ import annotations

from typing import Any

from dit_engine.testing.conformance import PipelineCase
from dit_engine.testing.zoo import zoo_entry
from dit_engine.testing.zoo._build import embeds, generator, seeded_module

_TEXT = 6  # text tokens: differs from the image token count so the streams are told apart
_STEPS = 6
_TEXT_DIM = 16
_Z = 4  # latent channels of the tiny VAEs

# Wan lineage: 32x64 px, 5 frames -> 2 x 4 x 8 latents -> 16 video tokens (patch 1x2x2).
_WAN_SIZE = dict(height=32, width=64, num_frames=5)
_WAN_BLOCKS = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, text_dim=_TEXT_DIM,
                   freq_dim=32, ffn_dim=32, num_layers=4, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                   rope_max_seq_len=32)
_CLIP_IMAGE, _CLIP_PATCH, _CLIP_DIM = 16, 8, 8  # CLIP vision: (16/8)^2 + 1 = 5 image tokens of width 8
_CLIP_TOKENS = (_CLIP_IMAGE // _CLIP_PATCH) ** 2 + 1


def _wan_scheduler(shift: float = 3.0):
    """The scheduler the Wan 2.1 diffusers checkpoints ship (UniPC on flow sigmas)."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
                                   num_train_timesteps=1000)


def _wan_vae():
    """AutoencoderKLWan with Wan's 8x spatial / 4x temporal compression, ``_Z`` channels, unit statistics."""
    from diffusers import AutoencoderKLWan

    return seeded_module(AutoencoderKLWan, component=1, base_dim=4, z_dim=_Z, dim_mult=[1, 1, 1, 1],
                         num_res_blocks=1, temperal_downsample=[False, True, True],
                         latents_mean=[0.0] * _Z, latents_std=[1.0] * _Z)


def _clip_vision():
    """A tiny CLIP vision tower and its processor (16 px images, patch 8)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(hidden_size=_CLIP_DIM, intermediate_size=16, num_hidden_layers=2,
                              num_attention_heads=2, image_size=_CLIP_IMAGE, patch_size=_CLIP_PATCH)
    encoder = seeded_module(CLIPVisionModel, component=2, config=config)
    processor = CLIPImageProcessor(size={"shortest_edge": _CLIP_IMAGE},
                                   crop_size={"height": _CLIP_IMAGE, "width": _CLIP_IMAGE})
    return encoder, processor


def _image(shade: int = 96):
    """A deterministic conditioning frame (PIL, the pipelines' usual input)."""
    from PIL import Image

    return Image.new("RGB", (_WAN_SIZE["width"], _WAN_SIZE["height"]), (shade, 128, 255 - shade))


def _wan_text(guidance: float) -> dict[str, Any]:
    """Prompt embeddings (and negative ones when guidance splits the step into two calls)."""
    kwargs: dict[str, Any] = dict(prompt_embeds=embeds(1, _TEXT, _TEXT_DIM))
    if guidance > 1:
        kwargs["negative_prompt_embeds"] = embeds(1, _TEXT, _TEXT_DIM, seed=3)
    return kwargs


def _separate_cfg_case(pipe, frames: dict[str, Any] | None = None, **inputs: Any) -> PipelineCase:
    """``call``: guidance 1, one transformer call per step; ``cfg_call``: guidance 5, cond + uncond calls."""
    frames = _WAN_SIZE if frames is None else frames

    def call(guidance: float = 1.0) -> dict:
        extra = {k: (v() if callable(v) else v) for k, v in inputs.items()}
        return dict(**_wan_text(guidance), **frames, **extra, num_inference_steps=_STEPS, guidance_scale=guidance,
                    output_type="latent", generator=generator(0))

    return PipelineCase(pipe, call, cfg_call=lambda: call(5.0))


# ---------------------------------------------------------------------------------------------- Wan
def _wan_transformer(component: int = 0, **config: Any):
    from diffusers import WanTransformer3DModel

    return seeded_module(WanTransformer3DModel, component=component,
                         **{**_WAN_BLOCKS, "in_channels": _Z, "out_channels": _Z, **config})


@zoo_entry("wan", adapter="wan", pipeline="WanPipeline", note="prompt embeddings, latents out (no VAE)")
def wan() -> PipelineCase:
    from diffusers import WanPipeline

    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=_wan_scheduler(),
                       transformer=_wan_transformer())
    return _separate_cfg_case(pipe)


@zoo_entry("wan22", adapter="wan", pipeline="WanPipeline",
           note="Wan 2.2 A14B: two experts split at boundary_ratio 0.875 (4 + 2 of 6 steps); prompt embeddings, latents out")
def wan22() -> PipelineCase:
    from diffusers import WanPipeline

    # Wan 2.2 T2V settings: UniPC with flow shift 12 and boundary 0.875. At 6 steps the timesteps are
    # 999, 983, 960, 923 (high-noise expert `transformer`) and 857, 707 (low-noise `transformer_2`).
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=_wan_scheduler(shift=12.0),
                       transformer=_wan_transformer(0), transformer_2=_wan_transformer(3), boundary_ratio=0.875)
    return _separate_cfg_case(pipe)


def _wan_i2v(last_frame: bool) -> PipelineCase:
    from diffusers import WanImageToVideoPipeline

    encoder, processor = _clip_vision()
    # in: noise latents + 4 mask channels (one per frame of a latent frame) + conditioning latents
    image_config = dict(in_channels=2 * _Z + 4, image_dim=_CLIP_DIM)
    if last_frame:  # FLF2V: first and last frame CLIP tokens side by side, with learned positions
        image_config["pos_embed_seq_len"] = 2 * _CLIP_TOKENS
    pipe = WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=_wan_vae(), scheduler=_wan_scheduler(),
                                   image_processor=processor, image_encoder=encoder,
                                   transformer=_wan_transformer(**image_config))
    inputs: dict[str, Any] = dict(image=_image)
    if last_frame:
        inputs["last_image"] = lambda: _image(200)
    return _separate_cfg_case(pipe, **inputs)


@zoo_entry("wan_i2v", adapter="wan", pipeline="WanImageToVideoPipeline",
           note="Wan 2.1 I2V: prompt embeddings, tiny VAE and CLIP vision, latents out")
def wan_i2v() -> PipelineCase:
    return _wan_i2v(last_frame=False)


@zoo_entry("wan_flf2v", adapter="wan", pipeline="WanImageToVideoPipeline",
           note="Wan 2.1 FLF2V (first + last frame): prompt embeddings, tiny VAE and CLIP vision, latents out")
def wan_flf2v() -> PipelineCase:
    return _wan_i2v(last_frame=True)


@zoo_entry("wan_vace", adapter="wan_vace", pipeline="WanVACEPipeline",
           note="prompt embeddings, tiny VAE, no control video (zeros), latents out")
def wan_vace() -> PipelineCase:
    from diffusers import WanVACEPipeline, WanVACETransformer3DModel

    # VACE control input: inactive + reactive video latents (2 x _Z) and the 8x8-unshuffled mask (64)
    transformer = seeded_module(WanVACETransformer3DModel, **{**_WAN_BLOCKS, "in_channels": _Z, "out_channels": _Z},
                                vace_layers=[0, 2], vace_in_channels=2 * _Z + 64)
    pipe = WanVACEPipeline(tokenizer=None, text_encoder=None, vae=_wan_vae(), scheduler=_wan_scheduler(),
                           transformer=transformer)
    return _separate_cfg_case(pipe)


@zoo_entry("skyreels_v2", adapter="skyreels_v2", pipeline="SkyReelsV2Pipeline",
           note="prompt embeddings, latents out (no VAE)")
def skyreels_v2() -> PipelineCase:
    from diffusers import SkyReelsV2Pipeline, SkyReelsV2Transformer3DModel

    transformer = seeded_module(SkyReelsV2Transformer3DModel, **{**_WAN_BLOCKS, "in_channels": _Z, "out_channels": _Z})
    pipe = SkyReelsV2Pipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=_wan_scheduler(shift=8.0),
                              transformer=transformer)
    return _separate_cfg_case(pipe)


@zoo_entry("chronoedit", adapter="chronoedit", pipeline="ChronoEditPipeline",
           note="prompt embeddings, tiny VAE and CLIP vision, no temporal reasoning (5 frames), latents out")
def chronoedit() -> PipelineCase:
    from diffusers import ChronoEditPipeline, ChronoEditTransformer3DModel, FlowMatchEulerDiscreteScheduler

    encoder, processor = _clip_vision()
    transformer = seeded_module(ChronoEditTransformer3DModel,
                                **{**_WAN_BLOCKS, "in_channels": 2 * _Z + 4, "out_channels": _Z, "image_dim": _CLIP_DIM})
    pipe = ChronoEditPipeline(tokenizer=None, text_encoder=None, image_encoder=encoder, image_processor=processor,
                              transformer=transformer, vae=_wan_vae(),
                              scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))
    # ChronoEdit generates 5 frames unless temporal reasoning is on
    return _separate_cfg_case(pipe, frames=dict(height=32, width=64), image=_image)


# ---------------------------------------------------------------------------------------- CogVideoX
# 32x32 px, 9 frames -> 3 x 4 x 4 latents -> 12 video tokens (patch 2; CogVideoX 1.5 pads to 4 latent
# frames and patches 2 of them together: 8 tokens). The text length must equal max_text_seq_length.
_COG_SIZE = dict(height=32, width=32, num_frames=9)
_COG_BLOCKS = dict(num_attention_heads=2, attention_head_dim=8, in_channels=_Z, out_channels=_Z, time_embed_dim=16,
                   text_embed_dim=_TEXT_DIM, num_layers=4, sample_width=4, sample_height=4, sample_frames=9,
                   patch_size=2, temporal_compression_ratio=4, max_text_seq_length=_TEXT)


def _cog_case(pipe, **inputs: Any) -> PipelineCase:
    def call() -> dict:
        extra = {k: (v() if callable(v) else v) for k, v in inputs.items()}
        return dict(prompt_embeds=embeds(1, _TEXT, _TEXT_DIM), negative_prompt_embeds=embeds(1, _TEXT, _TEXT_DIM, seed=3),
                    **_COG_SIZE, **extra, num_inference_steps=_STEPS, guidance_scale=6.0, output_type="latent",
                    generator=generator(0))

    return PipelineCase(pipe, call)  # batched CFG: one transformer call per step


def _cogvideox(scheduler, **config: Any) -> PipelineCase:
    from diffusers import CogVideoXPipeline, CogVideoXTransformer3DModel

    transformer = seeded_module(CogVideoXTransformer3DModel, **{**_COG_BLOCKS, **config})
    pipe = CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer, scheduler=scheduler)
    return _cog_case(pipe)


@zoo_entry("cogvideox", adapter="cogvideox", pipeline="CogVideoXPipeline",
           note="CogVideoX 1.0 (2B: sincos positions, DDIM): prompt embeddings, latents out (no VAE)")
def cogvideox() -> PipelineCase:
    from diffusers import CogVideoXDDIMScheduler

    return _cogvideox(CogVideoXDDIMScheduler(timestep_spacing="trailing"))


@zoo_entry("cogvideox15", adapter="cogvideox", pipeline="CogVideoXPipeline",
           note="CogVideoX 1.5: temporal patch 2, 3D RoPE, DPM scheduler; prompt embeddings, latents out (no VAE)")
def cogvideox15() -> PipelineCase:
    from diffusers import CogVideoXDPMScheduler

    # 3D RoPE splits the head dim into 1/4 (frames) + 3/8 + 3/8 (height, width), each even: 16 is the smallest
    return _cogvideox(CogVideoXDPMScheduler(timestep_spacing="trailing"), attention_head_dim=16, patch_size_t=2,
                      use_rotary_positional_embeddings=True, use_learned_positional_embeddings=False)


@zoo_entry("consisid", adapter="consisid", pipeline="ConsisIDPipeline",
           note="prompt embeddings, random face features (no insightface / face ViT), tiny VAE, latents out; "
                "the pipeline class is imported from its module (diffusers exports a dummy without OpenCV; cv2 is not called)")
def consisid() -> PipelineCase:
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler, ConsisIDTransformer3DModel
    # Without OpenCV, `diffusers.ConsisIDPipeline` is a dummy that raises; the module itself imports
    # cv2 only when it is available, and uses it only to draw face keypoints (`kps_cond`, unused here).
    from diffusers.pipelines.consisid.pipeline_consisid import ConsisIDPipeline

    # head dim 16: the 3D RoPE needs it (see cogvideox15)
    transformer = seeded_module(
        ConsisIDTransformer3DModel, **{**_COG_BLOCKS, "in_channels": 2 * _Z, "attention_head_dim": 16},
        use_rotary_positional_embeddings=True, use_learned_positional_embeddings=True,
        # identity branch: a tiny local facial extractor and a perceiver cross-attention after every other
        # block (its key/value width is int(2/3 x 32) = 21, the extractor's output width)
        is_train_face=True, is_kps=False, cross_attn_interval=2, cross_attn_dim_head=8, cross_attn_num_heads=1,
        LFE_id_dim=4, LFE_vit_dim=4, LFE_depth=2, LFE_dim_head=8, LFE_num_heads=1, LFE_num_id_token=1,
        LFE_num_querie=2, LFE_output_dim=21, LFE_ff_mult=1, LFE_num_scale=1)
    vae = seeded_module(AutoencoderKLCogVideoX, component=1, in_channels=3, out_channels=3,
                        down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
                        block_out_channels=(8, 8, 8, 8), latent_channels=_Z, layers_per_block=1, norm_num_groups=2,
                        temporal_compression_ratio=4)
    pipe = ConsisIDPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                            scheduler=CogVideoXDPMScheduler(timestep_spacing="trailing"))
    from PIL import Image

    return _cog_case(pipe, image=lambda: Image.new("RGB", (32, 32), (96, 128, 160)),
                     id_cond=lambda: embeds(1, 4, seed=5), id_vit_hidden=lambda: [embeds(1, 3, 4, seed=6)])
