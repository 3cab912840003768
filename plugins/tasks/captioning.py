"""`captioning`: BLIP's image-grounded text decoder generates the caption from the image tokens."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch
from torch import nn

from mmreg.components import Dataset, Encoded, Encoder, Evaluation, Fusion, Modality, Sample, Task
from mmreg.data import IGNORE
from mmreg.errors import ConfigError
from mmreg.hookspecs import hookimpl
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


class Captioning(Task):
    """Image captioning: the decoder is trained by a token-level loss (``lm``) to write the
    caption after ``eval.prompt``; evaluation generates one caption per image (greedy, or beam
    search with ``eval.num_beams``, by transformers' ``generate``) and scores it with
    pycocoevalcap's BLEU-4 and CIDEr-D against every reference caption of that image."""

    target = "caption"
    provides = frozenset({"token_logits"})
    needs_image_tokens = True

    def build_head(self, width: int, dataset: Dataset, encoder: Encoder) -> nn.Module:
        prompt = self.settings.prompt if self.settings is not None else ""
        self.tokenizer = build_word_tokenizer([*dataset.texts("train", "caption"), prompt], MAX_TOKENS)
        # The prompt's tokens without [EOS]: generation continues from them.
        self.prompt_ids = self.tokenizer(prompt)["input_ids"][:-1]
        return CaptionDecoder(self.tokenizer, width, encoder.image_token_dim)

    def targets(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        prompt = self.settings.prompt if self.settings is not None else ""
        texts = [f"{prompt} {s.caption}".strip() for s in samples]
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return {"caption_ids": tokens["input_ids"], "caption_mask": tokens["attention_mask"]}

    def forward(self, head: nn.Module, fusion: Fusion, features: Encoded, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids, mask = batch["caption_ids"], batch["caption_mask"]
        logits = head(ids, mask, features.image_tokens)
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE)
        labels[:, : len(self.prompt_ids) - 1] = IGNORE  # BLIP scores only the caption after the prompt
        return {"token_logits": logits[:, :-1], "token_labels": labels}

    @torch.inference_mode()
    def generate(self, head: nn.Module, image: Modality, *, num_beams: int | None = None, prompt: str | None = None) -> list[str]:
        """One caption per image (image tokens [N, T, D_enc]), starting with the prompt; greedy
        when ``num_beams`` is 1. Unset arguments come from the ``eval`` settings."""
        settings = self.settings
        prompt_ids = self.prompt_ids if prompt is None else self.tokenizer(prompt)["input_ids"][:-1]
        if prompt is not None:
            self._check_words(prompt)
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
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return self.tokenizer.batch_decode(out.tolist(), skip_special_tokens=True)

    def _check_words(self, prompt: str) -> None:
        """Refuse a prompt with a word the decoder never learnt (its vocabulary is the training captions')."""
        normalised = self.tokenizer.backend_tokenizer.normalizer.normalize_str(prompt)
        for word, _ in self.tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(normalised):
            if word not in self.tokenizer.get_vocab():
                raise ConfigError(
                    f"prompt word '{word}' is not in the decoder's vocabulary (the training captions and eval.prompt); "
                    f"use known words, or train with this prompt as eval.prompt"
                )

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


@hookimpl
def mmreg_register_tasks(register):
    register("captioning", Captioning, help="generate the caption from image tokens (BLIP's decoder): CIDEr-D, BLEU-4")
