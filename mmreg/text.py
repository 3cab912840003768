"""Text helpers that encoder plugins share: the tiny presets' tokenizers (byte-level BPE by default)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

# Special tokens, in vocabulary order: [EOS] must not get id 2, or CLIPTextModel
# pools at the largest token id (the legacy OpenAI rule) instead of at [EOS].
PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIALS = (PAD, UNK, BOS, EOS)
MAX_VOCAB = 4096  # specials + 256 bytes + merges: a tiny model's embedding table stays small
VOCABULARIES = ("bytes", "words")  # the ``vocabulary`` parameter of the tiny presets and the captioning decoder


def build_tokenizer(captions: Sequence[str], max_length: int, vocabulary: str = "bytes") -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2's byte alphabet, Radford et al. 2019; HF ``tokenizers``)
    that represents any text: every UTF-8 byte is a token, so a word never seen in ``captions``
    (a validation caption's, a prompt's) is spelled in smaller pieces, never lost or mapped to
    an unknown token. ``captions`` only teach the merges (at most ``MAX_VOCAB`` tokens in all),
    so their words are one or a few tokens; none at all gives the 256 bytes alone. Training is
    deterministic, so a run rebuilt from the same captions gets the same ids.

    Lower-cases, wraps each text as ``[BOS] ... [EOS]``; ``decode`` gives the text back, spaces
    and punctuation included (lower-cased, one leading space to strip).

    ``vocabulary="words"`` gives instead a word-level vocabulary of the captions' words, every
    other word mapped to ``[UNK]``: what runs made before byte-level BPE used, kept so they rebuild.
    """
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from tokenizers.processors import TemplateProcessing

    if vocabulary == "words":
        return _word_level(captions, max_length)
    backend = Tokenizer(BPE())
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=MAX_VOCAB, special_tokens=list(SPECIALS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(list(captions), trainer)
    bos, eos = backend.token_to_id(BOS), backend.token_to_id(EOS)
    backend.post_processor = TemplateProcessing(single=f"{BOS} $A {EOS}", special_tokens=[(BOS, bos), (EOS, eos)])
    return _wrap(backend, max_length)


def _word_level(captions: Sequence[str], max_length: int) -> PreTrainedTokenizerFast:
    """Lower-cased words split on whitespace and punctuation, a vocabulary of the captions' words."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from tokenizers.processors import TemplateProcessing

    normalizer = normalizers.Lowercase()
    pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    words = sorted({w for c in captions for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(c))})
    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *(w for w in words if w not in SPECIALS)])}
    backend = Tokenizer(WordLevel(vocab, unk_token=UNK))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizer
    backend.post_processor = TemplateProcessing(single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])])
    return _wrap(backend, max_length)


def _wrap(backend: object, max_length: int) -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        model_max_length=max_length,
        padding_side="right",
    )

