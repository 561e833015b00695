"""``TinyDiTPipeline``: a class-conditional Flux-architecture pipeline for 16x16 digits.

The denoising loop deliberately mirrors :class:`diffusers.FluxPipeline` — same
latent packing, same ``img_ids``/``txt_ids``, one ``scheduler.set_timesteps``
call before the loop, the same keyword arguments to ``self.transformer`` and
``self.scheduler.step`` — so that anything that hooks a Flux pipeline (block
caches, profilers, compilation) hooks this one the same way, only much faster.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from .conditioner import ClassConditioner
from .vae import PixelShuffleVAE

__all__ = ["TinyDiTPipeline"]


class TinyDiTPipeline(DiffusionPipeline):
    """Generate 16x16 grayscale digits (returned as RGB) from class-name prompts.

    Components:
        transformer: a :class:`~diffusers.FluxTransformer2DModel` (``patch_size=1``,
            ``in_channels = 4 * vae.latent_channels``) predicting the flow-matching
            velocity ``noise - x0``.
        scheduler: a :class:`~diffusers.FlowMatchEulerDiscreteScheduler`.
        vae: a :class:`~dit_engine.digits.vae.PixelShuffleVAE`.
        conditioner: a :class:`~dit_engine.digits.conditioner.ClassConditioner`.
        sample_size: The image side in pixels the transformer was trained on
            (16 for the shipped model; the pipeline always generates this size).
    """

    model_cpu_offload_seq = "conditioner->transformer->vae"

    def __init__(
        self,
        transformer: FluxTransformer2DModel,
        scheduler: FlowMatchEulerDiscreteScheduler,
        vae: PixelShuffleVAE,
        conditioner: ClassConditioner,
        sample_size: int = 16,
    ):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler, vae=vae, conditioner=conditioner)
        self.register_to_config(sample_size=sample_size)
        self.vae_scale_factor = vae.scale_factor
        # Flux packs 2x2 latent pixels into one token, so the image side must be a
        # multiple of 2 * vae_scale_factor.
        if sample_size % (self.vae_scale_factor * 2):
            raise ValueError(f"sample_size {sample_size} is not a multiple of {2 * self.vae_scale_factor}")
        self._guidance_scale = 1.0
        self._num_timesteps = 0
        self._current_timestep = None

    # -- fixed geometry --------------------------------------------------------------

    @property
    def height(self) -> int:
        """Output image height in pixels (fixed by the trained model)."""
        return int(self.config.sample_size)

    @property
    def width(self) -> int:
        """Output image width in pixels (fixed by the trained model)."""
        return int(self.config.sample_size)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The prompts the model understands, in label order."""
        return self.conditioner.class_names

    @property
    def guidance_scale(self) -> float:
        """Guidance scale of the current (or last) call."""
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Whether the current (or last) call used classifier-free guidance."""
        return self._guidance_scale > 1.0

    @property
    def num_timesteps(self) -> int:
        """Number of denoising steps of the current (or last) call."""
        return self._num_timesteps

    @property
    def current_timestep(self) -> torch.Tensor | None:
        """Scheduler timestep being denoised, or ``None`` outside the loop."""
        return self._current_timestep

    # -- Flux-style latent helpers (same layout as FluxPipeline) ----------------------

    @staticmethod
    def _prepare_latent_image_ids(height: int, width: int, device, dtype) -> torch.Tensor:
        """Position ids ``(height * width, 3)`` of the packed tokens: ``(0, row, col)``."""
        ids = torch.zeros(height, width, 3)
        ids[..., 1] = ids[..., 1] + torch.arange(height)[:, None]
        ids[..., 2] = ids[..., 2] + torch.arange(width)[None, :]
        return ids.reshape(height * width, 3).to(device=device, dtype=dtype)

    @staticmethod
    def _pack_latents(latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> ``(B, (h/2)*(w/2), 4*C)``: each token is a 2x2 latent patch."""
        b, c, h, w = latents.shape
        latents = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        return latents.reshape(b, (h // 2) * (w // 2), c * 4)

    @staticmethod
    def _unpack_latents(latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Inverse of :meth:`_pack_latents` for latent size ``(height, width)``."""
        b, _, channels = latents.shape
        latents = latents.view(b, height // 2, width // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return latents.reshape(b, channels // 4, height, width)

    @property
    def latent_size(self) -> int:
        """Side of the (unpacked) latent image."""
        return self.height // self.vae_scale_factor

    def prepare_latents(self, batch_size: int, dtype, device, generator, latents=None):
        """Initial packed noise ``(B, N, 4*C)`` and the matching ``img_ids``.

        ``latents`` may be given packed ``(B, N, 4*C)`` or unpacked ``(B, C, h, w)``.
        """
        size = self.latent_size
        channels = self.vae.latent_channels
        img_ids = self._prepare_latent_image_ids(size // 2, size // 2, device, dtype)
        if latents is not None:
            if latents.ndim == 4:
                latents = self._pack_latents(latents)
            expected = (batch_size, (size // 2) ** 2, channels * 4)
            if tuple(latents.shape) != expected:
                raise ValueError(f"latents must have shape {expected} (packed), got {tuple(latents.shape)}")
            return latents.to(device=device, dtype=dtype), img_ids
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"got {len(generator)} generators for an effective batch size of {batch_size}; they must match"
            )
        noise = randn_tensor((batch_size, channels, size, size), generator=generator, device=device, dtype=dtype)
        return self._pack_latents(noise), img_ids

    def _postprocess(self, images: torch.Tensor, output_type: str):
        """Gray ``(B, 1, H, W)`` in [0, 1] -> RGB in the requested ``output_type``."""
        images = images.repeat(1, 3, 1, 1)
        if output_type == "pt":
            return images
        array = images.permute(0, 2, 3, 1).float().cpu().numpy()
        if output_type == "np":
            return array
        return VaeImageProcessor.numpy_to_pil(array)

    # -- generation ------------------------------------------------------------------

    def _predict(self, context: str, latents, timestep, embeds, pooled, guidance, text_ids, image_ids) -> torch.Tensor:
        """One transformer call (the velocity), inside diffusers' cache context of its CFG branch."""
        with self.transformer.cache_context(context):
            return self.transformer(
                hidden_states=latents,
                timestep=timestep / 1000,
                guidance=guidance,
                pooled_projections=pooled,
                encoder_hidden_states=embeds,
                txt_ids=text_ids,
                img_ids=image_ids,
                return_dict=False,
            )[0]

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_inference_steps: int = 28,
        guidance_scale: float = 1.0,
        separate_cfg: bool = False,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Generate one or more digits.

        Args:
            prompt: Class name(s), e.g. ``"seven"`` or ``["zero", "3"]`` (case-insensitive;
                digit characters are aliases). Unknown names raise
                :class:`~dit_engine.digits.conditioner.UnknownPromptError`.
            num_inference_steps: Number of Euler flow-matching steps.
            guidance_scale: Classifier-free guidance scale; values ``> 1`` enable CFG
                against the null class (``1.0`` = plain conditional sampling).
            separate_cfg: With CFG, run the conditional and unconditional branches as two
                transformer calls per step (conditional first) instead of one call on the
                concatenated ``[cond, uncond]`` batch. Results are numerically (near-)equal.
            num_images_per_prompt: Images generated per prompt.
            generator: Torch generator(s) for the initial noise (one per image if a list).
            latents: Optional initial noise, packed ``(B, N, 4*C)`` or unpacked ``(B, C, h, w)``.
            output_type: ``"pil"`` (list of RGB PIL images), ``"pt"`` (tensor ``(B, 3, H, W)``
                in [0, 1]), ``"np"`` (array ``(B, H, W, 3)`` in [0, 1]) or ``"latent"``
                (packed latents).
            return_dict: Return an :class:`~diffusers.ImagePipelineOutput` instead of a tuple.
        """
        if output_type not in ("pil", "pt", "np", "latent"):
            raise ValueError(f"output_type must be 'pil', 'pt', 'np' or 'latent', got {output_type!r}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("prompt must not be empty")
        self._guidance_scale = float(guidance_scale)
        self._current_timestep = None
        device = self._execution_device
        dtype = self.transformer.dtype
        batch_size = len(prompts) * num_images_per_prompt

        # 1. Conditioning (the "text encoder" step). Repeat per image like FluxPipeline:
        # the images of one prompt are adjacent in the batch.
        prompt_embeds, pooled_embeds = self.conditioner.encode(prompts)
        prompt_embeds = prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0).to(device, dtype)
        pooled_embeds = pooled_embeds.repeat_interleave(num_images_per_prompt, dim=0).to(device, dtype)
        text_ids = torch.zeros(prompt_embeds.shape[1], 3, device=device, dtype=dtype)
        do_cfg = self.do_classifier_free_guidance
        if do_cfg:
            null_embeds, null_pooled = self.conditioner.encode_null(batch_size)
            null_embeds, null_pooled = null_embeds.to(device, dtype), null_pooled.to(device, dtype)
            if not separate_cfg:
                # One batched call per step on [cond, uncond].
                batched_embeds = torch.cat([prompt_embeds, null_embeds])
                batched_pooled = torch.cat([pooled_embeds, null_pooled])

        # 2. Initial noise.
        latents, latent_image_ids = self.prepare_latents(batch_size, dtype, device, generator, latents)

        # 3. Timesteps: sigmas 1 -> 1/steps as in FluxPipeline. The scheduler is built
        # with use_dynamic_shifting=False and shift=1 (what the model was trained for),
        # so the sigmas are used as given and the scheduler appends the final 0.
        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        self.scheduler.set_timesteps(sigmas=sigmas, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        guidance = None  # no distilled-guidance embedding (guidance_embeds=False)

        # 4. Denoising loop.
        self.scheduler.set_begin_index(0)
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for t in timesteps:
                self._current_timestep = t
                if do_cfg and not separate_cfg:
                    timestep = t.expand(2 * batch_size).to(latents.dtype)
                    both = self._predict("cond", torch.cat([latents, latents]), timestep, batched_embeds, batched_pooled,
                                         guidance, text_ids, latent_image_ids)
                    noise_pred, neg_noise_pred = both.chunk(2)
                    noise_pred = neg_noise_pred + guidance_scale * (noise_pred - neg_noise_pred)
                else:
                    timestep = t.expand(batch_size).to(latents.dtype)
                    noise_pred = self._predict("cond", latents, timestep, prompt_embeds, pooled_embeds,
                                               guidance, text_ids, latent_image_ids)
                    if do_cfg:
                        neg_noise_pred = self._predict("uncond", latents, timestep, null_embeds, null_pooled,
                                                       guidance, text_ids, latent_image_ids)
                        noise_pred = neg_noise_pred + guidance_scale * (noise_pred - neg_noise_pred)

                latents = self.scheduler.step(noise_pred, t, latents, return_dict=False)[0]
                progress_bar.update()
        self._current_timestep = None

        # 5. Decode.
        if output_type == "latent":
            image = latents
        else:
            unpacked = self._unpack_latents(latents, self.latent_size, self.latent_size)
            image = self._postprocess(self.vae.decode(unpacked.to(self.vae.dtype)), output_type)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)
