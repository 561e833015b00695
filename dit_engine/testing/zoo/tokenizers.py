"""Tokenizers built in memory (no download): character-level CLIP and T5, byte-level BPE Qwen2.

Used by the full tiny pipelines of the zoo (FLUX, Wan, Qwen-Image); they work with
``HF_HUB_OFFLINE=1`` and round-trip through ``save_pretrained`` / ``from_pretrained``.
"""

from __future__ import annotations

import string

__all__ = ["tiny_clip_tokenizer", "tiny_t5_tokenizer", "tiny_qwen2_tokenizer"]


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
