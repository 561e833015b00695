"""Class-label "text encoder" for the tiny digits model.

Flux conditions its transformer on two things produced by text encoders: a
sequence of token embeddings (``encoder_hidden_states``, from T5) and a single
pooled vector (``pooled_projections``, from CLIP). The tiny model has ten
classes instead of free text, so both are plain learned lookup tables indexed
by the class. One extra row, the *null class*, is the unconditional embedding
used for classifier-free guidance (it is trained by label dropout).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

__all__ = ["ClassConditioner", "UnknownPromptError"]


class UnknownPromptError(ValueError):
    """A prompt does not name one of the model's classes.

    The message is a single line listing the prompts the model knows.
    """

    def __init__(self, prompt: str, known: Sequence[str]):
        self.prompt = prompt
        self.known = tuple(known)
        super().__init__(f"unknown prompt {prompt!r} for the tiny model; known prompts: {', '.join(self.known)}")


class ClassConditioner(ModelMixin, ConfigMixin):
    """Maps class-name prompts to Flux-style ``(prompt_embeds, pooled_embeds)``.

    Args:
        class_names: The class names, in label order (label ``i`` is ``class_names[i]``).
        num_tokens: Length ``T`` of the token sequence given to the transformer.
        token_dim: Width ``D`` of each token (the transformer's ``joint_attention_dim``).
        pooled_dim: Width ``P`` of the pooled vector (the transformer's ``pooled_projection_dim``).

    Prompts are matched case-insensitively, ignoring surrounding whitespace; when
    there are at most ten classes, the digit ``str(i)`` is also accepted for class
    ``i`` (so ``"7"`` means ``"seven"`` for the digits model).
    """

    @register_to_config
    def __init__(
        self,
        class_names: Sequence[str] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
        num_tokens: int = 4,
        token_dim: int = 64,
        pooled_dim: int = 64,
    ):
        super().__init__()
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.null_index = self.num_classes
        self.num_tokens = num_tokens
        self.token_dim = token_dim
        # Row ``num_classes`` is the null (unconditional) class.
        self.token_embedding = nn.Embedding(self.num_classes + 1, num_tokens * token_dim)
        self.pooled_embedding = nn.Embedding(self.num_classes + 1, pooled_dim)
        # Small init: the transformer's input projections see values of a sensible scale from step 0.
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.pooled_embedding.weight, std=0.02)

        self._lookup: dict[str, int] = {}
        for index, name in enumerate(self.class_names):
            self._lookup[name.strip().lower()] = index
            if self.num_classes <= 10:
                self._lookup.setdefault(str(index), index)

    def label_of(self, prompt: str) -> int:
        """Return the class index a prompt names, or raise :class:`UnknownPromptError`."""
        if not isinstance(prompt, str):
            raise UnknownPromptError(repr(prompt), self.class_names)
        try:
            return self._lookup[prompt.strip().lower()]
        except KeyError:
            raise UnknownPromptError(prompt, self.class_names) from None

    def labels_of(self, prompts: Sequence[str]) -> torch.Tensor:
        """Class indices of ``prompts`` as a ``long`` tensor on the module's device."""
        return torch.tensor([self.label_of(p) for p in prompts], dtype=torch.long, device=self.device)

    def embed_labels(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed integer labels (``num_classes`` is the null class).

        Returns:
            ``prompt_embeds`` of shape ``(B, T, D)`` and ``pooled_embeds`` of shape ``(B, P)``.
        """
        tokens = self.token_embedding(labels).view(labels.shape[0], self.num_tokens, self.token_dim)
        return tokens, self.pooled_embedding(labels)

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed class-name prompts; see :meth:`embed_labels` for the shapes."""
        if isinstance(prompts, str):
            prompts = [prompts]
        return self.embed_labels(self.labels_of(prompts))

    def encode_null(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of the null class (the unconditional branch of CFG) for ``batch_size`` rows."""
        labels = torch.full((batch_size,), self.null_index, dtype=torch.long, device=self.device)
        return self.embed_labels(labels)

    def forward(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as :meth:`embed_labels`."""
        return self.embed_labels(labels)
