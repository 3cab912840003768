"""`blip`: BLIP's encoder-decoder (transformers' ``BlipForConditionalGeneration``), a tiny
random-init preset or a saved/hub checkpoint. The vision transformer gives the image tokens;
its image-grounded text decoder is handed to a task that generates text (`captioning`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mmreg.components import Modality, Tower
from mmreg.hf_encoder import TransformersEncoder, loading_checkpoint
from mmreg.text import build_tokenizer
from mmreg_plugins.encoders.blip_plugin import BlipParams


class BlipEncoder(TransformersEncoder):
    """Image tokens: the ViT's last hidden states, pooled: its post-layernormed [CLS]. Texts are
    encoded by the decoder's BERT run bidirectionally without cross-attention ([CLS] pooled).
    ``text_decoder`` (``BlipTextLMHeadModel``), ``tokenizer`` and ``decoder_bos_token_id`` are
    what a generating task reuses (Li et al. 2022, BLIP)."""

    gives_tokens = True

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, max_length: int) -> None:
        super().__init__(model, tokenizer, image_processor, max_length, "encoder.max_length")
        self.text_decoder = model.text_decoder
        self.decoder_bos_token_id = model.config.text_config.bos_token_id
        self.image_token_dim = self.image_pooled_dim = model.config.vision_config.hidden_size
        self.text_token_dim = self.text_pooled_dim = model.config.text_config.hidden_size

    @classmethod
    def create(cls, *, captions: Sequence[str], **params: Any) -> BlipEncoder:
        """The registered factory: the checkpoint when ``pretrained`` is set, else the tiny preset."""
        p = BlipParams(**params)
        return load_pretrained(p.pretrained, p.max_length) if p.pretrained else build_tiny(p, captions)

    def encode_images(self, pixel_values: torch.Tensor) -> Modality:
        out = self.model.vision_model(pixel_values=pixel_values)
        return Modality(out.pooler_output, out.last_hidden_state, None)

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Modality:
        hidden = self.text_decoder.bert(input_ids=input_ids, attention_mask=attention_mask, is_decoder=False).last_hidden_state
        return Modality(hidden[:, 0], hidden, attention_mask.bool())

    def towers(self) -> dict[str, Tower]:
        """The ViT (fused ``qkv`` projection) and the decoder's BERT (``query``/``value``)."""
        return {"vision": Tower("model.vision_model", ("qkv",)), "text": Tower("model.text_decoder.bert", ("query", "value"))}


def build_tiny(params: BlipParams, captions: Sequence[str]) -> BlipEncoder:
    """A small random-init BLIP from a ``BlipConfig``, with a byte-level tokenizer whose merges the training captions teach (``build_tokenizer``)."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor

    tokenizer = build_tokenizer(captions, params.max_length, params.vocabulary)
    shared = {"hidden_size": params.hidden_size, "intermediate_size": 4 * params.hidden_size, "num_hidden_layers": params.layers, "num_attention_heads": params.heads}
    text = {
        **shared,
        "vocab_size": len(tokenizer),
        "encoder_hidden_size": params.hidden_size,
        "max_position_embeddings": 64,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "sep_token_id": tokenizer.eos_token_id,
    }
    vision = {**shared, "image_size": params.image_size, "patch_size": params.patch_size}
    config = BlipConfig(text_config=text, vision_config=vision)
    processor = BlipImageProcessor(size={"height": params.image_size, "width": params.image_size})
    return BlipEncoder(BlipForConditionalGeneration(config), tokenizer, processor, params.max_length)


def load_pretrained(pretrained: str, max_length: int) -> BlipEncoder:
    """Model and ``BlipProcessor`` (BERT tokenizer, image processor) from one checkpoint, or a one-line ConfigError."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    with loading_checkpoint(pretrained, "BLIP checkpoint", "BlipForConditionalGeneration and BlipProcessor"):
        model = BlipForConditionalGeneration.from_pretrained(pretrained)
        processor = BlipProcessor.from_pretrained(pretrained)
    return BlipEncoder(model, processor.tokenizer, processor.image_processor, max_length)
