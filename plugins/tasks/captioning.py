"""`captioning`: BLIP's image-grounded text decoder generates the caption from the image tokens."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mmreg.components import Dataset, Encoded, Encoder, Evaluation, Fusion, Modality, Sample, Task
from mmreg.data import IGNORE
from mmreg.errors import ConfigError
from mmreg.layers import full_mask
from mmreg.text import build_word_tokenizer

MAX_TOKENS = 64  # caption length the decoder's position table covers, prompt and specials included


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


class Captioning(Task):
    """Image captioning: the decoder is trained by a token-level loss (``lm``) to write the
    caption after ``eval.prompt``; evaluation generates one caption per image (greedy, or beam
    search with ``eval.num_beams``, by transformers' ``generate``) and scores it with
    pycocoevalcap's BLEU-4 and CIDEr-D against every reference caption of that image."""

    target = "caption"
    provides = frozenset({"token_logits"})
    needs_image_tokens = True

    def build_head(self, width: int, dataset: Dataset, encoder: Encoder) -> nn.Module:
        """The encoder's own decoder where it has one (``text_decoder``, e.g. `blip`), else a new
        one at the fused width over a word vocabulary of the training captions and the prompt."""
        prompt = self.settings.prompt if self.settings is not None else ""
        shared = getattr(encoder, "text_decoder", None)
        if shared is not None:
            self.tokenizer, self.bos_token_id = encoder.tokenizer, encoder.decoder_bos_token_id
            head: nn.Module = EncoderDecoder(shared)
        else:
            self.tokenizer = build_word_tokenizer([*dataset.texts("train", "caption"), prompt], MAX_TOKENS)
            self.bos_token_id = self.tokenizer.bos_token_id
            head = CaptionDecoder(self.tokenizer, width, encoder.image_token_dim)
        # BLIP ends a caption at [SEP] where the tokenizer has no end-of-sequence token
        eos = self.tokenizer.eos_token_id
        self.eos_token_id = eos if eos is not None else self.tokenizer.sep_token_id
        self.prompt_ids = self._prompt_ids(prompt)
        return head

    def _prompt_ids(self, prompt: str) -> list[int]:
        """The prompt's tokens after the decoder's start token, without the end one: generation continues
        from them. A word the vocabulary lacks is refused (the tiny decoder knows only the training captions)."""
        tokens = self.tokenizer(prompt, return_offsets_mapping=True)
        ids = tokens["input_ids"][:-1]
        for i, (start, end) in zip(ids, tokens["offset_mapping"], strict=False):
            if i == self.tokenizer.unk_token_id:
                raise ConfigError(
                    f"prompt word '{prompt[start:end]}' is not in the decoder's vocabulary (the training captions and "
                    f"eval.prompt); use known words, or train with this prompt as eval.prompt"
                )
        return [self.bos_token_id, *ids[1:]]

    def targets(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        prompt = self.settings.prompt if self.settings is not None else ""
        texts = [f"{prompt} {s.caption}".strip() for s in samples]
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        ids = tokens["input_ids"]
        ids[:, 0] = self.bos_token_id  # BLIP's decoder starts from its own [DEC] token, not [CLS]
        return {"caption_ids": ids, "caption_mask": tokens["attention_mask"]}

    def forward(self, head: nn.Module, fusion: Fusion, features: Encoded, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids, mask = batch["caption_ids"], batch["caption_mask"]
        logits = head(ids, mask, features.image_tokens)
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE)
        labels[:, : len(self.prompt_ids) - 1] = IGNORE  # BLIP scores only the caption after the prompt
        return {"token_logits": logits[:, :-1], "token_labels": labels}

    def predict(self, model: nn.Module, pixels: dict[str, torch.Tensor], texts: Sequence[str], top_k: int) -> list[list[dict[str, Any]]]:
        """One generated caption per image, as ``{"caption": text}`` (``mmreg caption`` is the short form)."""
        raw = model.encoder.encode_images(pixels["pixel_values"].to(next(model.parameters()).device))
        captions = self.generate(model.head, Modality(tokens=raw.tokens, mask=raw.mask))
        return [[{"caption": c}] for c in captions]

    @torch.inference_mode()
    def generate(self, head: nn.Module, image: Modality, *, num_beams: int | None = None, prompt: str | None = None) -> list[str]:
        """One caption per image (image tokens [N, T, D_enc]), starting with the prompt; greedy
        when ``num_beams`` is 1. Unset arguments come from the ``eval`` settings."""
        settings = self.settings
        prompt_ids = self.prompt_ids if prompt is None else self._prompt_ids(prompt)
        if len(prompt_ids) >= MAX_TOKENS:
            raise ConfigError(f"the prompt is {len(prompt_ids)} tokens, the decoder reads at most {MAX_TOKENS}; shorten it")
        n = len(image)
        input_ids = torch.tensor([prompt_ids] * n, device=image.tokens.device)
        out = head.decoder.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            encoder_hidden_states=image.tokens,
            encoder_attention_mask=full_mask(image.tokens, image.mask).long(),
            num_beams=num_beams or settings.num_beams,
            max_new_tokens=min(settings.max_new_tokens, MAX_TOKENS - len(prompt_ids)),
            do_sample=False,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return self.tokenizer.batch_decode(out.tolist(), skip_special_tokens=True)

    def evaluations(self, model: nn.Module) -> list[Evaluation]:
        return [CaptionEvaluation(self)]


class CaptionEvaluation(Evaluation):
    """BLEU-4 (Papineni et al. 2002) and CIDEr-D (Vedantam et al. 2015) of the generated captions,
    by pycocoevalcap's scorers, each image against all its reference captions (images that
    appear several times in the split, with different captions, are one image with several)."""

    names = ("cider", "bleu4")

    def __init__(self, task: Captioning) -> None:
        self.task = task
        self.generated: dict[str, str] = {}
        self.references: dict[str, list[str]] = {}

    def _without_prompt(self, text: str) -> str:
        prompt = self.task.tokenizer.decode(self.task.prompt_ids, skip_special_tokens=True)
        return text[len(prompt) :].strip() if prompt and text.startswith(prompt) else text

    def update(self, model: nn.Module, features: Encoded, batch: dict[str, torch.Tensor]) -> None:
        captions = self.task.generate(model.head, features.image_tokens)
        references = self.task.tokenizer.batch_decode(batch["caption_ids"].tolist(), skip_special_tokens=True)
        for pixels, caption, reference in zip(batch["pixel_values"], captions, references, strict=True):
            key = hashlib.sha1(pixels.float().cpu().numpy().tobytes()).hexdigest()
            self.generated[key] = self._without_prompt(caption)
            self.references.setdefault(key, []).append(self._without_prompt(reference))

    def compute(self) -> dict[str, float]:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider

        generated = {key: [caption] for key, caption in self.generated.items()}
        bleu, _ = Bleu(4).compute_score(self.references, generated, verbose=0)
        cider, _ = Cider().compute_score(self.references, generated)
        return {"cider": float(cider), "bleu4": float(bleu[3])}
