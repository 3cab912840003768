"""`clip`: a Hugging Face CLIP encoder, a tiny random-init preset or a saved/hub checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmreg.components import Modality, Tower
from mmreg.hf_encoder import TransformersEncoder, loading_checkpoint
from mmreg.text import EOS, build_tokenizer
from mmreg_plugins.encoders.clip_plugin import ClipParams


class ClipEncoder(TransformersEncoder):
    """CLIP's two towers; pooled outputs are the projected embeddings, tokens the last hidden states."""

    gives_tokens = True
    shared_space = True  # image_embeds and text_embeds: CLIP's contrastive space
    gives_logit_scale = True  # CLIPModel's learnable logit scale, for the `clip` loss

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, max_length: int, max_length_setting: str | None = None) -> None:
        super().__init__(model, tokenizer, image_processor, max_length, max_length_setting)
        config = model.config
        self.image_token_dim = config.vision_config.hidden_size
        self.text_token_dim = config.text_config.hidden_size
        self.image_pooled_dim = self.text_pooled_dim = config.projection_dim

    @classmethod
    def create(cls, *, captions: Sequence[str], **params: Any) -> ClipEncoder:
        """The registered factory: the checkpoint when ``pretrained`` is set, else the tiny preset."""
        p = ClipParams(**params)
        return load_pretrained(p.pretrained) if p.pretrained else build_tiny(p, captions)

    @property
    def logit_scale(self) -> torch.nn.Parameter:
        """The log of the multiplier turning cosine similarity into logits, as CLIPModel stores it."""
        return self.model.logit_scale

    def use(self, *, tokens: bool, pooled: bool) -> None:
        """The losses own the temperature, so CLIP's logit scale never trains; the pooled
        path (post-layernorm, projections) trains only when pooled vectors are read."""
        self.model.logit_scale.requires_grad_(False)
        for module in (self.model.vision_model.post_layernorm, self.model.visual_projection, self.model.text_projection):
            module.requires_grad_(pooled)

    def encode_images(self, pixel_values: torch.Tensor) -> Modality:
        out = self.model.get_image_features(pixel_values=pixel_values)
        return Modality(out.pooler_output, out.last_hidden_state, None)

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Modality:
        out = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return Modality(out.pooler_output, out.last_hidden_state, attention_mask.bool())

    def towers(self) -> dict[str, Tower]:
        """CLIPModel's two transformers; LoRA adapts the attention's query and value projections (the docs' choice)."""
        return {"vision": Tower("model.vision_model", ("q_proj", "v_proj")), "text": Tower("model.text_model", ("q_proj", "v_proj"))}

    def export(self, directory: Path) -> None:
        """A transformers directory: ``CLIPModel.from_pretrained(directory)`` (or AutoModel,
        AutoTokenizer, AutoImageProcessor) gives this encoder's pooled embeddings."""
        self.save_transformers(directory)


def build_tiny(params: ClipParams, captions: Sequence[str]) -> ClipEncoder:
    """A small random-init CLIP with a byte-level tokenizer whose merges the training captions teach (``build_tokenizer``)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = build_tokenizer(captions, params.max_length, params.vocabulary)
    eos_token_id = tokenizer.convert_tokens_to_ids(EOS)
    shared = {
        "hidden_size": params.hidden_size,
        "intermediate_size": 4 * params.hidden_size,
        "num_hidden_layers": params.layers,
        "num_attention_heads": params.heads,
        "projection_dim": params.projection_dim,
    }
    text = {
        **shared,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": params.max_length,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": eos_token_id,
    }
    vision = {**shared, "image_size": params.image_size, "patch_size": params.patch_size}
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=params.projection_dim)
    processor = CLIPImageProcessor(
        size={"shortest_edge": params.image_size},
        crop_size={"height": params.image_size, "width": params.image_size},
    )
    return ClipEncoder(CLIPModel(config), tokenizer, processor, params.max_length, "encoder.max_length")


def load_pretrained(pretrained: str) -> ClipEncoder:
    """Model, tokenizer and image processor from one checkpoint, or a one-line ConfigError."""
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, CLIPConfig, CLIPModel

    with loading_checkpoint(pretrained, "CLIP checkpoint", "model, tokenizer, image processor"):
        config = AutoConfig.from_pretrained(pretrained)
        if not isinstance(config, CLIPConfig):
            raise ValueError(f"it is a '{config.model_type}' checkpoint, not 'clip'")
        model = CLIPModel.from_pretrained(pretrained, config=config)
        tokenizer = AutoTokenizer.from_pretrained(pretrained)
        processor = AutoImageProcessor.from_pretrained(pretrained)
    return ClipEncoder(model, tokenizer, processor, config.text_config.max_position_embeddings)
