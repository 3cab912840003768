"""Text helpers that encoder plugins share: a word-level tokenizer built from the training captions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

# Special tokens, in vocabulary order: [EOS] must not get id 2, or CLIPTextModel
# pools at the largest token id (the legacy OpenAI rule) instead of at [EOS].
PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIALS = (PAD, UNK, BOS, EOS)


def build_word_tokenizer(captions: Sequence[str], max_length: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the captions' words: a tiny random-init model needs no subword vocabulary.

    Lower-cases, splits on whitespace and punctuation, wraps each text as
    ``[BOS] ... [EOS]`` and maps unseen words to ``[UNK]``.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.Lowercase()
    pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    words = sorted({w for c in captions for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(c))})
    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *(w for w in words if w not in SPECIALS)])}
    backend = Tokenizer(WordLevel(vocab, unk_token=UNK))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizer
    backend.post_processor = TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        model_max_length=max_length,
        padding_side="right",
    )
