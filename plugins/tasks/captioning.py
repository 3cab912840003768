"""`captioning`: a text decoder generates the caption from the image: BLIP's image-grounded decoder
(cross-attention to the image tokens), or the language model an encoder conditions on image queries
(BLIP-2's, ``Encoder.conditions_language_model``)."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mmreg.components import Dataset, Encoded, Encoder, Evaluation, Fusion, Modality, ModelView, Sample, Task
from mmreg.data import IGNORE
from mmreg.errors import ConfigError
from mmreg.layers import full_mask
from mmreg.text import build_tokenizer

MAX_TOKENS = 64  # caption length the decoder's position table covers, prompt and specials included
PAD_BYTE = 0xFF  # pads ``caption_utf8`` rows: a byte that never occurs in UTF-8


def utf8_rows(texts: Sequence[str]) -> torch.Tensor:
    """Texts as uint8 [N, B] rows of their UTF-8 bytes, padded with ``PAD_BYTE`` to the longest:
    strings travel through a batch (and DataLoader workers) as a tensor, exactly."""
    encoded = [t.encode("utf-8") for t in texts]
    rows = torch.full((len(encoded), max((len(e) for e in encoded), default=0)), PAD_BYTE, dtype=torch.uint8)
    for i, e in enumerate(encoded):
        rows[i, : len(e)] = torch.tensor(list(e), dtype=torch.uint8)
    return rows


def utf8_texts(rows: torch.Tensor) -> list[str]:
    """The texts ``utf8_rows`` made, from its uint8 [N, B] rows."""
    return [bytes(b for b in row if b != PAD_BYTE).decode("utf-8") for row in rows.tolist()]


def caption_words(text: str) -> str:
    """A caption as the scorers compare it: lower-cased words (letters and digits) joined by single
    spaces, punctuation dropped, as the COCO caption evaluation's PTB tokenizer leaves it. Generated
    and reference captions alike, so neither tokenizer's spacing or case counts."""
    return " ".join(re.findall(r"\w+", text.lower()))


class CaptionDecoder(nn.Module):
    """transformers' ``BlipTextLMHeadModel``: causal self-attention, cross-attention to the
    image tokens, LM head (Li et al. 2022, BLIP), randomly initialised at the fused width."""

    def __init__(self, tokenizer, width: int, image_width: int) -> None:
        from transformers import BlipTextConfig, BlipTextLMHeadModel

        super().__init__()
        config = BlipTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            encoder_hidden_size=image_width,
            intermediate_size=4 * width,
            num_hidden_layers=2,
            num_attention_heads=math.gcd(width, 4),
            max_position_embeddings=MAX_TOKENS,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            sep_token_id=tokenizer.eos_token_id,
        )
        self.decoder = BlipTextLMHeadModel(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image: Modality) -> torch.Tensor:
        """Next-token logits [N, L, V] for captions [N, L] given image tokens [N, T, D_enc]."""
        out = self.decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=image.tokens,
            encoder_attention_mask=full_mask(image.tokens, image.mask).long(),
        )
        return out.logits


class EncoderDecoder(CaptionDecoder):
    """The encoder's own image-grounded decoder (BLIP's), referenced rather than owned, so its
    weights are saved, loaded and adapted once, as the encoder's."""

    def __init__(self, decoder: nn.Module) -> None:
        nn.Module.__init__(self)
        self._decoder = [decoder]  # a list hides it from nn.Module's registration

    @property
    def decoder(self) -> nn.Module:
        return self._decoder[0]


class ConditionedLanguageModel(nn.Module):
    """The head of a task writing text with an encoder that conditions a language model on image
    queries (``Encoder.conditions_language_model``: BLIP-2's): the encoder's own language model,
    referenced rather than owned, so its weights are saved, loaded and adapted once, as the encoder's."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self._encoder = [encoder]  # a list hides it from nn.Module's registration

    @property
    def encoder(self) -> Encoder:
        return self._encoder[0]

    def logits(self, image: Modality, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``token_logits`` [N, L, V] and ``token_labels`` [N, L] of a batch of ``Encoder.language_inputs``."""
        logits, labels = self.encoder.language_logits(image, batch)
        return {"token_logits": logits, "token_labels": labels}

    def write(self, image: Modality, prompts: Sequence[str], *, num_beams: int, max_new_tokens: int) -> list[str]:
        """What the language model writes after each prompt, given the image queries [N, Q, D_lm]."""
        inputs = {k: v.to(image.tokens.device) for k, v in self.encoder.language_inputs(prompts).items()}
        return self.encoder.generate_text(image, inputs, num_beams=num_beams, max_new_tokens=max_new_tokens)


class Captioning(Task):
    """Image captioning: the decoder is trained by a token-level loss (``lm``) to write the
    caption after ``task.prompt``; evaluation generates one caption per image (greedy, or beam
    search with ``task.num_beams``, by transformers' ``generate``) and scores it with
    pycocoevalcap's BLEU-4 and CIDEr-D against every reference caption of that image: the data
    set's own strings, which ``targets`` carries through the batch as ``caption_utf8``.

    The parameters are read when used, so `mmreg caption --beams/--prompt` (``predict_images``'s
    ``task_params``) change them on a task built as the run trained it."""

    target = "caption"
    provides = frozenset({"token_logits"})
    needs_image_tokens = True
    headline = "cider"
    metric_names = ("cider", "bleu4")

    def __init__(
        self, *, num_beams: int = 1, max_new_tokens: int = 20, prompt: str = "", vocabulary: str = "bytes", settings: Any = None
    ) -> None:
        super().__init__(settings=settings)
        self.num_beams, self.max_new_tokens, self.prompt, self.vocabulary = num_beams, max_new_tokens, prompt, vocabulary
        self.conditioned: ConditionedLanguageModel | None = None  # the head, where the encoder conditions a language model

    def build_head(self, width: int, dataset: Dataset, encoder: Encoder) -> nn.Module:
        """The encoder's language model where it conditions one on image queries (BLIP-2: the caption
        is what it writes after ``task.prompt``, ``ConditionedLanguageModel``); the encoder's own decoder where it has one (``text_decoder``, e.g. `blip`), its vocabulary
        grown by the words of ``task.prompt`` its tokenizer maps to the unknown token (none for the
        tiny presets' byte-level one); else a new decoder at the fused width with a byte-level
        tokenizer (``mmreg.text.build_tokenizer``) whose merges the training captions and the prompt
        teach. Raises ConfigError for a prompt the decoder cannot read (``prompt_ids``,
        ``_learn_prompt_words``)."""
        if getattr(encoder, "conditions_language_model", False):  # BLIP-2: the caption is what its language model writes after the prompt
            self.tokenizer = encoder.tokenizer
            self.conditioned = ConditionedLanguageModel(encoder)
            return self.conditioned
        shared = getattr(encoder, "text_decoder", None)
        if shared is not None:
            self.tokenizer, self.bos_token_id = encoder.tokenizer, encoder.decoder_bos_token_id
            self._learn_prompt_words(shared)
            head: nn.Module = EncoderDecoder(shared)
        else:
            self.tokenizer = build_tokenizer([*dataset.texts("train", "caption"), self.prompt], MAX_TOKENS, self.vocabulary)
            self.bos_token_id = self.tokenizer.bos_token_id
            head = CaptionDecoder(self.tokenizer, width, encoder.image_token_dim)
        # BLIP ends a caption at [SEP] where the tokenizer has no end-of-sequence token
        eos = self.tokenizer.eos_token_id
        self.eos_token_id = eos if eos is not None else self.tokenizer.sep_token_id
        self.prompt_ids()  # a prompt the decoder cannot read is refused before any training
        return head

    def _unknown_words(self, prompt: str) -> list[str]:
        """The words of ``prompt`` the tokenizer maps to its unknown token, once each, in order."""
        tokens = self.tokenizer(prompt, return_offsets_mapping=True)
        unk = self.tokenizer.unk_token_id
        found = [prompt[a:b] for i, (a, b) in zip(tokens["input_ids"], tokens["offset_mapping"], strict=True) if unk is not None and i == unk]
        return list(dict.fromkeys(found))

    def _learn_prompt_words(self, decoder: nn.Module) -> None:
        """Add the prompt's unknown words to the shared tokenizer as whole words, and rows for them to
        the decoder's embeddings and LM head (random; trained with the rest). Done the same way on every
        build, so a rebuilt run's weights fit.

        Raises ConfigError where the decoder has ids the tokenizer does not name (a checkpoint's
        [DEC] beyond its tokenizer): new words would take them."""
        missing = self._unknown_words(self.prompt)
        if not missing:
            return
        if len(self.tokenizer) != decoder.get_input_embeddings().num_embeddings:
            raise ConfigError(
                f"prompt word '{missing[0]}' is not in the encoder's vocabulary, which cannot grow here (its decoder "
                f"has ids its tokenizer does not name); write task.prompt in known words"
            )
        from tokenizers import AddedToken

        self.tokenizer.add_tokens([AddedToken(w, single_word=True, normalized=True) for w in missing])
        decoder.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)

    def prompt_ids(self) -> list[int]:
        """``task.prompt``'s tokens after the decoder's start token, without the end one: training
        prefixes every caption with them and generation continues from them.

        Raises ConfigError for a word the tokenizer maps to its unknown token (never with a
        byte-level one; a real vocabulary's, unless the prompt was trained with) and for a prompt
        longer than the decoder reads.
        """
        unknown = self._unknown_words(self.prompt)
        if unknown:
            raise ConfigError(
                f"prompt word '{unknown[0]}' is not in the decoder's vocabulary (its tokenizer's, and the "
                f"task.prompt trained with); use known words, or train with this prompt as task.prompt"
            )
        ids = [self.bos_token_id, *self.tokenizer(self.prompt)["input_ids"][1:-1]]
        if len(ids) >= MAX_TOKENS:
            raise ConfigError(f"the prompt is {len(ids)} tokens, the decoder reads at most {MAX_TOKENS}; shorten it")
        return ids

    def targets(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        """``caption_ids``, ``caption_mask`` [N, L]: the prompt and caption as the decoder reads them;
        ``caption_utf8`` uint8 [N, B]: the caption as the data set wrote it (``utf8_rows``), the
        reference evaluation scores against."""
        if self.conditioned is not None:  # what Blip2ForConditionalGeneration takes (Encoder.language_inputs)
            inputs = self.conditioned.encoder.language_inputs([self.prompt] * len(samples), [s.caption for s in samples])
            return {**inputs, "caption_utf8": utf8_rows([s.caption for s in samples])}
        texts = [f"{self.prompt} {s.caption}".strip() for s in samples]
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        ids = tokens["input_ids"]
        ids[:, 0] = self.bos_token_id  # BLIP's decoder starts from its own [DEC] token, not [CLS]
        return {"caption_ids": ids, "caption_mask": tokens["attention_mask"], "caption_utf8": utf8_rows([s.caption for s in samples])}

    def forward(self, head: nn.Module, fusion: Fusion, features: Encoded, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if isinstance(head, ConditionedLanguageModel):
            return head.logits(features.image_tokens, batch)  # type: ignore[arg-type]
        ids, mask = batch["caption_ids"], batch["caption_mask"]
        logits = head(ids, mask, features.image_tokens)
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE)
        labels[:, : len(self.prompt_ids()) - 1] = IGNORE  # BLIP scores only the caption after the prompt
        return {"token_logits": logits[:, :-1], "token_labels": labels}

    def predict(self, model: ModelView, pixels: dict[str, torch.Tensor], texts: Sequence[str], top_k: int) -> list[list[dict[str, Any]]]:
        """One generated caption per image, ``{"caption": text}``: ``task.prompt`` as written, then what
        the decoder wrote after it (``mmreg caption`` is the short form). ``texts`` and ``top_k`` are not read.
        Raises ConfigError for a prompt the decoder cannot read."""
        raw = model.encoder.encode_images(pixels["pixel_values"].to(model.device))
        continued = self.generate(model.head, Modality(tokens=raw.tokens, mask=raw.mask))
        return [[{"caption": f"{self.prompt} {c}".strip()}] for c in continued]

    @torch.inference_mode()
    def generate(self, head: nn.Module, image: Modality) -> list[str]:
        """What the decoder writes after ``task.prompt`` for each image (image tokens [N, T, D_enc]),
        decoded without the prompt; beam search of ``task.num_beams`` (1: greedy), at most
        ``task.max_new_tokens`` tokens. Raises ConfigError for a prompt the decoder cannot read."""
        if isinstance(head, ConditionedLanguageModel):
            return head.write(image, [self.prompt] * len(image), num_beams=self.num_beams, max_new_tokens=self.max_new_tokens)
        prompt_ids = self.prompt_ids()
        input_ids = torch.tensor([prompt_ids] * len(image), device=image.tokens.device)
        out = head.decoder.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            encoder_hidden_states=image.tokens,
            encoder_attention_mask=full_mask(image.tokens, image.mask).long(),
            num_beams=self.num_beams,
            max_new_tokens=min(self.max_new_tokens, MAX_TOKENS - len(prompt_ids)),
            do_sample=False,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return [c.strip() for c in self.tokenizer.batch_decode(out[:, len(prompt_ids) :].tolist(), skip_special_tokens=True)]

    def evaluations(self, model: ModelView) -> list[Evaluation]:
        return [CaptionEvaluation(self)]


class CaptionEvaluation(Evaluation):
    """BLEU-4 (Papineni et al. 2002) and CIDEr-D (Vedantam et al. 2015) of the generated captions,
    by pycocoevalcap's scorers, each image against all its reference captions: the data set's own
    strings (``batch["caption_utf8"]``), never a decode of token ids, so words the vocabulary lacks
    count as misses. An image that appears several times in the split, with different captions,
    is one image with several (recognised by its pixels). Both sides are compared as
    ``caption_words`` leaves them."""

    names = ("cider", "bleu4")

    def __init__(self, task: Captioning) -> None:
        self.task = task
        self.generated: dict[str, str] = {}
        self.references: dict[str, list[str]] = {}

    def update(self, model: ModelView, features: Encoded, batch: dict[str, torch.Tensor]) -> None:
        captions = self.task.generate(model.head, features.image_tokens)
        references = utf8_texts(batch["caption_utf8"])
        for pixels, caption, reference in zip(batch["pixel_values"], captions, references, strict=True):
            key = hashlib.sha1(pixels.float().cpu().numpy().tobytes()).hexdigest()
            self.generated[key] = caption_words(caption)
            self.references.setdefault(key, []).append(caption_words(reference))

    def compute(self) -> dict[str, float]:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider

        generated = {key: [caption] for key, caption in self.generated.items()}
        bleu, _ = Bleu(4).compute_score(self.references, generated, verbose=0)
        cider, _ = Cider().compute_score(self.references, generated)
        return {"cider": float(cider), "bleu4": float(bleu[3])}
