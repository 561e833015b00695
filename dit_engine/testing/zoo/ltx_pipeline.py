"""Tiny LTX-Video pipeline (``diffusers.LTXPipeline``) with every component: T5 text encoder,
``AutoencoderKLLTXVideo`` (0.9.1-like: timestep conditioning, noise injection) and transformer.

The tiny zoo's ``ltx_video`` case feeds prompt embeddings and returns latents; this one runs the
whole pipeline, so the text encoder and the VAE decode are exercised (``parallel.vae``,
``parallel.text_encoder``). See :mod:`dit_engine.testing` for the shared conventions.
"""

from __future__ import annotations

from typing import Any

from dit_engine.testing.zoo._build import TEXT_ENCODER, TINY_PROMPT, TRANSFORMER, VAE, generator, seeded
from dit_engine.testing.zoo.tokenizers import tiny_t5_tokenizer

__all__ = ["TINY_LTX_VIDEO_VAE", "build_tiny_ltx_video_pipeline", "tiny_ltx_video_call_kwargs"]

_TEXT_WIDTH = 32  # T5 d_model == the transformer's caption_channels
_LATENT_CHANNELS = 8
#: ``AutoencoderKLLTXVideo`` like LTX-Video 0.9.1 (timestep conditioning, noise injection,
#: stride-2 downsampling), tiny: the pipeline's VAE and tests/parallel's VAE-parallel case
TINY_LTX_VIDEO_VAE = dict(latent_channels=_LATENT_CHANNELS, block_out_channels=(8, 8, 16, 16),
                          decoder_block_out_channels=(16, 16, 16, 16), layers_per_block=(1, 1, 1, 1, 1),
                          decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
                          decoder_spatio_temporal_scaling=(True, True, False, False),
                          decoder_inject_noise=(True, True, False, False, False), timestep_conditioning=True, patch_size=2)


def build_tiny_ltx_video_pipeline(seed: int = 0) -> Any:
    """A tiny, fully working ``LTXPipeline`` (float32, CPU, eval): 8x spatial and 4x temporal
    compression (patch 2, two spatio-temporal downsamples), 2 heads x 8, 2 layers."""
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    tokenizer = tiny_t5_tokenizer()
    with seeded(seed, TRANSFORMER):
        transformer = LTXVideoTransformer3DModel(in_channels=_LATENT_CHANNELS, out_channels=_LATENT_CHANNELS, patch_size=1,
                                                 patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
                                                 cross_attention_dim=16, num_layers=2, qk_norm="rms_norm_across_heads",
                                                 caption_channels=_TEXT_WIDTH)
    with seeded(seed, VAE):
        vae = AutoencoderKLLTXVideo(**TINY_LTX_VIDEO_VAE)
    with seeded(seed, TEXT_ENCODER):
        text_encoder = T5EncoderModel(T5Config(
            vocab_size=len(tokenizer), d_model=_TEXT_WIDTH, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
            relative_attention_num_buckets=8, relative_attention_max_distance=32, feed_forward_proj="gated-gelu",
            is_encoder_decoder=False, use_cache=False, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id))
    pipe = LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae.eval(), text_encoder=text_encoder.eval(),
                       tokenizer=tokenizer, transformer=transformer.eval())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_ltx_video_call_kwargs(**overrides: Any) -> dict[str, Any]:
    """64 x 64 px, 5 frames (2 latent frames of 8 x 8), 4 steps, CFG 3.0 (batched), the decode
    timestep and noise of LTX-Video 0.9.1, ``output_type="pt"``; ``seed=<int>`` replaces the generator."""
    seed = overrides.pop("seed", 0)
    kwargs = dict(prompt=TINY_PROMPT, negative_prompt="blurry", height=64, width=64, num_frames=5, num_inference_steps=4,
                  guidance_scale=3.0, max_sequence_length=32, decode_timestep=0.05, decode_noise_scale=0.025,
                  output_type="pt", generator=generator(seed))
    kwargs.update(overrides)
    return kwargs
