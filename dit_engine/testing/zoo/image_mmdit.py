"""Tiny zoo entries: MMDiT image families (Qwen-Image, Z-Image, SD3, AuraFlow, HiDream, PRX, OmniGen)."""

from __future__ import annotations

import torch

from dit_engine.testing.conformance import PipelineCase
from dit_engine.testing.zoo import zoo_entry
from dit_engine.testing.zoo._build import embeds, flow_match_scheduler, generator, seeded_module
from dit_engine.testing.zoo.qwen_image_pipeline import _tiny_qwen_text_encoder
from dit_engine.testing.zoo.tokenizers import tiny_qwen2_tokenizer

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


# --- Qwen-Image -----------------------------------------------------------------------------------

_QWEN_Z = 16  # latent channels (the pipelines pack 2x2 patches: transformer in_channels = 4 * 16)


def _qwen_transformer(**variant_config):
    from diffusers import QwenImageTransformer2DModel

    return seeded_module(QwenImageTransformer2DModel, patch_size=2, in_channels=4 * _QWEN_Z, out_channels=_QWEN_Z,
                         num_layers=3, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16,
                         guidance_embeds=False, axes_dims_rope=(4, 6, 6), **variant_config)


def _qwen_vae(input_channels: int = 3):
    from diffusers import AutoencoderKLQwenImage

    # vae_scale_factor 4 (two spatial downsamples, none in time); identity latent normalisation
    return seeded_module(AutoencoderKLQwenImage, component=1, base_dim=8, z_dim=_QWEN_Z, dim_mult=[1, 2, 2],
                         num_res_blocks=1, temperal_downsample=[False, False], input_channels=input_channels,
                         latents_mean=[0.0] * _QWEN_Z, latents_std=[1.0] * _QWEN_Z)


def _qwen_scheduler():
    return flow_match_scheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                                base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02,
                                time_shift_type="exponential")


def _qwen_prompt(cfg: bool) -> dict:
    kwargs = dict(prompt_embeds=embeds(1, _TEXT, 16), prompt_embeds_mask=torch.ones(1, _TEXT, dtype=torch.long))
    if cfg:  # true CFG: a negative prompt and true_cfg_scale > 1 -> separate cond and uncond calls
        kwargs.update(negative_prompt_embeds=embeds(1, _TEXT, 16, seed=3),
                      negative_prompt_embeds_mask=torch.ones(1, _TEXT, dtype=torch.long), true_cfg_scale=4.0)
    else:
        kwargs.update(true_cfg_scale=1.0)
    return kwargs


def _qwen_case(pipe, size: int | None, **fixed) -> PipelineCase:
    def call(cfg: bool = False):
        kwargs = dict(_qwen_prompt(cfg), num_inference_steps=6, output_type="latent", generator=generator(0))
        if size is not None:
            kwargs.update(height=size, width=size)
        kwargs.update({k: v() if callable(v) else v for k, v in fixed.items()})
        return kwargs

    return PipelineCase(pipe, call, cfg_call=lambda: call(cfg=True))


def _cap_qwen_image_area(*module_names: str) -> None:
    """Test-only patch: the Qwen-Image edit / layered pipelines resize their input image to a fixed
    1024² (640² for layered) area whatever height/width say, which makes a CPU call take seconds even
    with a tiny VAE. Capping ``calculate_dimensions`` in those pipeline modules to a 32² area keeps a
    call in milliseconds. It changes a module global for the rest of the (test) process."""
    import importlib

    for name in module_names:
        module = importlib.import_module(f"diffusers.pipelines.qwenimage.{name}")
        original = module.calculate_dimensions
        if getattr(original, "_zoo_capped", False):
            continue

        def capped(target_area, ratio, _original=original):
            return _original(min(target_area, 32 * 32), ratio)

        capped._zoo_capped = True
        module.calculate_dimensions = capped


def _tiny_vae_kl(latent_channels: int, levels: int = 2):
    """A tiny ``AutoencoderKL`` (vae_scale_factor ``2 ** (levels - 1)``) for pipelines that encode a
    control / input image or read VAE attributes."""
    from diffusers import AutoencoderKL

    return seeded_module(AutoencoderKL, component=1, in_channels=3, out_channels=3, latent_channels=latent_channels,
                         block_out_channels=(8,) * (levels - 1) + (16,), layers_per_block=1, norm_num_groups=4,
                         shift_factor=0.0, down_block_types=("DownEncoderBlock2D",) * levels,
                         up_block_types=("UpDecoderBlock2D",) * levels)


def _rgb_image(channels: str = "RGB", size: int = 32):
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (size, size, len(channels)), dtype=np.uint8)
    return Image.fromarray(pixels)  # (H, W, 3) -> RGB, (H, W, 4) -> RGBA


@zoo_entry("qwen_image", adapter="qwen_image", pipeline="QwenImagePipeline",
           note="prompt embeddings, latents out")
def qwen_image() -> PipelineCase:
    from diffusers import QwenImagePipeline

    pipe = QwenImagePipeline(scheduler=_qwen_scheduler(), vae=None, text_encoder=None, tokenizer=None,
                             transformer=_qwen_transformer())
    # no VAE: vae_scale_factor 8, so 64 px -> 8x8 latents -> 16 packed image tokens
    return _qwen_case(pipe, 64)


@zoo_entry("qwen_image_edit", adapter="qwen_image", pipeline="QwenImageEditPipeline",
           note="prompt embeddings (no VL encoder), tiny VAE, input area capped to 32² (patch), latents out")
def qwen_image_edit() -> PipelineCase:
    from diffusers import QwenImageEditPipeline

    _cap_qwen_image_area("pipeline_qwenimage_edit")
    pipe = QwenImageEditPipeline(scheduler=_qwen_scheduler(), vae=_qwen_vae(), text_encoder=None, tokenizer=None,
                                 processor=None, transformer=_qwen_transformer())
    # 32 px target (vae factor 4 -> 8x8 latents -> 16 packed tokens) + the 32 px input image (16 tokens)
    return _qwen_case(pipe, 32, image=_rgb_image)


@zoo_entry("qwen_image_edit_plus", adapter="qwen_image", pipeline="QwenImageEditPlusPipeline",
           note="Edit-2511 style (zero_cond_t); prompt embeddings (no VL encoder), tiny VAE, input areas capped to "
                "32² (patch), latents out")
def qwen_image_edit_plus() -> PipelineCase:
    from diffusers import QwenImageEditPlusPipeline

    _cap_qwen_image_area("pipeline_qwenimage_edit_plus")
    pipe = QwenImageEditPlusPipeline(scheduler=_qwen_scheduler(), vae=_qwen_vae(), text_encoder=None, tokenizer=None,
                                     processor=None, transformer=_qwen_transformer(zero_cond_t=True))
    return _qwen_case(pipe, 32, image=lambda: [_rgb_image()])  # as qwen_image_edit


@zoo_entry("qwen_image_controlnet", adapter="qwen_image", pipeline="QwenImageControlNetPipeline",
           note="prompt embeddings, tiny VAE (control image), latents out")
def qwen_image_controlnet() -> PipelineCase:
    from diffusers import QwenImageControlNetModel, QwenImageControlNetPipeline

    controlnet = seeded_module(QwenImageControlNetModel, component=2, patch_size=2, in_channels=4 * _QWEN_Z,
                               out_channels=_QWEN_Z, num_layers=2, attention_head_dim=16, num_attention_heads=2,
                               joint_attention_dim=16, axes_dims_rope=(4, 6, 6))
    pipe = QwenImageControlNetPipeline(scheduler=_qwen_scheduler(), vae=_qwen_vae(), text_encoder=None, tokenizer=None,
                                       transformer=_qwen_transformer(), controlnet=controlnet)
    # 32 px: vae factor 4 -> 8x8 latents -> 16 packed image tokens
    return _qwen_case(pipe, 32, control_image=_rgb_image)


@zoo_entry("qwen_image_layered", adapter="qwen_image", pipeline="QwenImageLayeredPipeline",
           note="prompt embeddings (the Qwen2.5-VL encoder is built but never runs), tiny RGBA VAE, "
                "input area capped to 32² (patch), 2 layers, decoded (latent output is broken upstream)")
def qwen_image_layered() -> PipelineCase:
    from diffusers import QwenImageLayeredPipeline

    _cap_qwen_image_area("pipeline_qwenimage_layered")
    # The pipeline reads `text_encoder.dtype` unguarded and captions the image when no prompt is
    # given: a tiny Qwen2.5-VL is present, and a prompt string is passed next to the embeddings
    # (they win) so it never runs.
    tokenizer = tiny_qwen2_tokenizer()
    text_encoder = seeded_module(_tiny_qwen_text_encoder, component=3, tokenizer=tokenizer)
    pipe = QwenImageLayeredPipeline(scheduler=_qwen_scheduler(), vae=_qwen_vae(input_channels=4),
                                    text_encoder=text_encoder, tokenizer=tokenizer, processor=None,
                                    transformer=_qwen_transformer(use_additional_t_cond=True, use_layer3d_rope=True))
    # 32² RGBA input (vae factor 4 -> 8x8 latents): 3 x 16 tokens for the 2 layers + composite, 16 for the input
    # output_type="latent" fails in diffusers 0.42 (`images` unbound), so this one decodes
    return _qwen_case(pipe, None, prompt="layers", image=lambda: _rgb_image("RGBA"), layers=2, resolution=640,
                      output_type="pt")


# --- Z-Image --------------------------------------------------------------------------------------

_Z_CHANNELS = 4  # latent channels


def _z_image_transformer():
    from diffusers import ZImageTransformer2DModel

    return seeded_module(ZImageTransformer2DModel, in_channels=_Z_CHANNELS, dim=32, n_layers=3, n_refiner_layers=1,
                         n_heads=2, n_kv_heads=2, cap_feat_dim=16, axes_dims=[4, 6, 6], axes_lens=[64, 32, 32])


def _z_image_call(size: int, **fixed):
    def call():
        # Z-Image takes per-sample lists of (tokens, cap_feat_dim) embeddings; CFG is batched (the
        # cond and uncond samples go through one transformer call as a list of 2).
        return dict(prompt_embeds=[embeds(_TEXT, 16)], negative_prompt_embeds=[embeds(_TEXT, 16, seed=3)],
                    height=size, width=size, num_inference_steps=6, guidance_scale=4.0, output_type="latent",
                    generator=generator(0), **{k: v() if callable(v) else v for k, v in fixed.items()})

    return call


@zoo_entry("z_image", adapter="z_image", pipeline="ZImagePipeline", note="prompt embeddings, latents out")
def z_image() -> PipelineCase:
    from diffusers import ZImagePipeline

    pipe = ZImagePipeline(scheduler=flow_match_scheduler(shift=3.0), vae=None, text_encoder=None, tokenizer=None,
                          transformer=_z_image_transformer())
    # no VAE: vae_scale_factor 8, so 64 px -> 8x8 latents -> 16 image tokens (patch 2)
    return PipelineCase(pipe, _z_image_call(64))  # batched CFG: one transformer call per step


@zoo_entry("z_image_controlnet", adapter="z_image", pipeline="ZImageControlNetPipeline",
           note="prompt embeddings, tiny VAE (control image), latents out")
def z_image_controlnet() -> PipelineCase:
    from diffusers import ZImageControlNetModel, ZImageControlNetPipeline

    vae = _tiny_vae_kl(_Z_CHANNELS)
    controlnet = seeded_module(ZImageControlNetModel, component=2, control_layers_places=[0, 2],
                               control_refiner_layers_places=[0], add_control_noise_refiner="control_noise_refiner",
                               control_in_dim=_Z_CHANNELS + 2, dim=32, n_refiner_layers=1, n_heads=2, n_kv_heads=2)
    pipe = ZImageControlNetPipeline(scheduler=flow_match_scheduler(shift=3.0), vae=vae, text_encoder=None,
                                    tokenizer=None, transformer=_z_image_transformer(), controlnet=controlnet)
    # 16 px control image: vae factor 2 -> 8x8 latents -> 16 image tokens
    return PipelineCase(pipe, _z_image_call(16, control_image=lambda: _rgb_image(size=16)))


# --- AuraFlow, HiDream, PRX -----------------------------------------------------------------------


@zoo_entry("auraflow", adapter="auraflow", pipeline="AuraFlowPipeline", note="prompt embeddings, latents out")
def auraflow() -> PipelineCase:
    from diffusers import AuraFlowPipeline, AuraFlowTransformer2DModel

    transformer = seeded_module(AuraFlowTransformer2DModel, sample_size=8, patch_size=2, in_channels=4,
                                num_mmdit_layers=2, num_single_dit_layers=2, attention_head_dim=8,
                                num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                                out_channels=4, pos_embed_max_size=64)
    pipe = AuraFlowPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                            scheduler=flow_match_scheduler())

    def call():
        # 64 px, vae factor 8 (no VAE) -> 8x8 latents -> 16 image tokens; batched CFG (guidance 3.5)
        mask = torch.ones(1, _TEXT, dtype=torch.long)
        return dict(prompt_embeds=embeds(1, _TEXT, 16), prompt_attention_mask=mask,
                    negative_prompt_embeds=embeds(1, _TEXT, 16, seed=3), negative_prompt_attention_mask=mask.clone(),
                    height=64, width=64, num_inference_steps=6, guidance_scale=3.5, output_type="latent",
                    generator=generator(0))

    return PipelineCase(pipe, call)


@zoo_entry("hidream", adapter="hidream", pipeline="HiDreamImagePipeline",
           note="T5 / Llama-3 / pooled embeddings, default_sample_size 8 (the pipeline rescales to its area), latents out")
def hidream() -> PipelineCase:
    from diffusers import HiDreamImagePipeline, HiDreamImageTransformer2DModel

    double, single = 2, 2
    transformer = seeded_module(HiDreamImageTransformer2DModel, patch_size=2, in_channels=4, out_channels=4,
                                num_layers=double, num_single_layers=single, attention_head_dim=16,
                                num_attention_heads=2, caption_channels=[16, 16], text_emb_dim=16,
                                num_routed_experts=2, num_activated_experts=1, axes_dims_rope=(8, 4, 4),
                                max_resolution=(16, 16), llama_layers=list(range(double + single)))
    pipe = HiDreamImagePipeline(scheduler=flow_match_scheduler(shift=3.0), vae=None, text_encoder=None,
                                tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None,
                                tokenizer_3=None, text_encoder_4=None, tokenizer_4=None, transformer=transformer)
    # HiDream rescales every request to the area (default_sample_size * vae_scale_factor)²: 8 * 8 =
    # 64 px -> 8x8 latents -> 16 image tokens (the real pipeline uses 128, i.e. 1024 px)
    pipe.default_sample_size = 8
    llama_layers = double + single

    def call():
        # llama3 embeddings are per layer: (layers, batch, tokens, dim); batched CFG (guidance 5)
        return dict(prompt_embeds_t5=embeds(1, _TEXT, 16), prompt_embeds_llama3=embeds(llama_layers, 1, _TEXT, 16, seed=2),
                    pooled_prompt_embeds=embeds(1, 16, seed=4), negative_prompt_embeds_t5=embeds(1, _TEXT, 16, seed=5),
                    negative_prompt_embeds_llama3=embeds(llama_layers, 1, _TEXT, 16, seed=6),
                    negative_pooled_prompt_embeds=embeds(1, 16, seed=7), height=64, width=64, num_inference_steps=6,
                    guidance_scale=5.0, output_type="latent", generator=generator(0))

    return PipelineCase(pipe, call)


@zoo_entry("prx", adapter="prx", pipeline="PRXPipeline", note="prompt embeddings, no resolution binning, latents out")
def prx() -> PipelineCase:
    from diffusers import PRXPipeline, PRXTransformer2DModel

    transformer = seeded_module(PRXTransformer2DModel, in_channels=4, patch_size=2, context_in_dim=16, hidden_size=32,
                                mlp_ratio=2.0, num_heads=2, depth=3, axes_dim=[8, 8])
    pipe = PRXPipeline(transformer=transformer, scheduler=flow_match_scheduler(), text_encoder=None, tokenizer=None,
                       vae=None)

    def call():
        # 64 px, vae factor 8 (no VAE) -> 8x8 latents -> 16 image tokens; batched CFG (guidance 5)
        mask = torch.ones(1, _TEXT, dtype=torch.bool)
        return dict(prompt_embeds=embeds(1, _TEXT, 16), prompt_attention_mask=mask,
                    negative_prompt_embeds=embeds(1, _TEXT, 16, seed=3), negative_prompt_attention_mask=mask.clone(),
                    height=64, width=64, num_inference_steps=6, guidance_scale=5.0, use_resolution_binning=False,
                    output_type="latent", generator=generator(0))

    return PipelineCase(pipe, call)


# --- OmniGen --------------------------------------------------------------------------------------


def _torchvision_transforms_stand_in():
    """Test-only shim: diffusers' OmniGen processor builds a ``torchvision.transforms`` pipeline in
    its constructor, and the pipeline module imports the processor only when torchvision is
    installed (it is not here). This stand-in has the four transforms the processor uses (Compose,
    Lambda, ToTensor, Normalize); the text-to-image call never runs them. The zoo injects it and the
    processor class into those diffusers modules (module globals, for the rest of the process)."""
    import types

    import numpy as np

    def compose(steps):
        def apply(value):
            for step in steps:
                value = step(value)
            return value

        return apply

    def to_tensor():
        return lambda image: torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)

    def normalize(mean, std, inplace=False):
        return lambda x: (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)

    return types.SimpleNamespace(Compose=compose, Lambda=lambda fn: fn, ToTensor=to_tensor, Normalize=normalize)


def _omnigen_tokenizer():
    """A word-level tokenizer built in memory: the words of OmniGen's instruction template and of the
    test prompt, its chat markers as special tokens, ``<pad>`` at id 2 (OmniGen's collator pads with
    2), every other word ``<unk>``. The pipeline tokenizes inside (it has no embeddings input)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "<pad>", "<|user|>", "<|end|>", "<|assistant|>", "<|diffusion|>"]
    words = "Generate an image according to the following instructions a red cube low quality".split()
    vocab = {token: i for i, token in enumerate(specials + sorted(set(words)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   additional_special_tokens=specials[3:], model_max_length=512)


@zoo_entry("omnigen", adapter="omnigen", pipeline="OmniGenPipeline",
           note="word-level in-memory tokenizer, torchvision.transforms stand-in (patch), tiny VAE, latents out")
def omnigen() -> PipelineCase:
    from diffusers import OmniGenPipeline, OmniGenTransformer2DModel
    from diffusers.pipelines.omnigen import pipeline_omnigen, processor_omnigen

    if not hasattr(processor_omnigen, "transforms"):  # torchvision missing: see the stand-in's docstring
        processor_omnigen.transforms = _torchvision_transforms_stand_in()
    if not hasattr(pipeline_omnigen, "OmniGenMultiModalProcessor"):  # imported there only with torchvision
        pipeline_omnigen.OmniGenMultiModalProcessor = processor_omnigen.OmniGenMultiModalProcessor
    tokenizer = _omnigen_tokenizer()
    head_dim = 8
    transformer = seeded_module(OmniGenTransformer2DModel, in_channels=4, patch_size=2, hidden_size=16,
                                num_attention_heads=2, num_key_value_heads=2, intermediate_size=32, num_layers=3,
                                pad_token_id=2, vocab_size=len(tokenizer), pos_embed_max_size=16,
                                rope_scaling={"short_factor": [1.0] * (head_dim // 2), "long_factor": [1.0] * (head_dim // 2)})
    # The pipeline reads vae.dtype even without input images, and its collator sizes the sequence for
    # a VAE factor of 8: a tiny 4-level VAE (never run: no input image, latents out) is present.
    pipe = OmniGenPipeline(transformer=transformer, scheduler=flow_match_scheduler(), vae=_tiny_vae_kl(4, levels=4),
                           tokenizer=tokenizer)

    def call():
        # 64 px, vae factor 8 -> 8x8 latents -> 16 image tokens; the prompt and OmniGen's built-in negative
        # prompt are tokenized inside and batched (CFG in one call per step, guidance 2.5)
        return dict(prompt="a red cube", height=64, width=64, num_inference_steps=6, guidance_scale=2.5,
                    output_type="latent", generator=generator(0))

    return PipelineCase(pipe, call)
