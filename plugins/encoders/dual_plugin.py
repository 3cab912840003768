"""Registers the `dual` encoder: parameters and help, no torch; dual.py is imported on first build."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mmreg.hookspecs import hookimpl
from mmreg.params import Vocabulary, vocabulary_field

TINY = "tiny"  # the small random-init preset of either tower


class DualParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vision: str = Field(
        TINY, description="a timm model name (e.g. resnet18, vit_small_patch16_224), or 'tiny' for a small random-init ViT"
    )
    vision_pretrained: bool = Field(
        False, description="load timm's pretrained weights for vision (read from the local Hugging Face cache)"
    )
    vision_checkpoint: str | None = Field(
        None,
        description="a local .safetensors or .pth state dict of the same vision architecture (a classifier in it is ignored)",
    )
    image_size: int | None = Field(
        None,
        ge=8,
        description="side of the square input in pixels (ViTs are resized to it); unset: 32 for 'tiny', else the model's own",
    )
    text: str = Field(
        TINY,
        description="a transformers model directory or cached hub id, or 'tiny' for a small random-init BERT on caption words",
    )
    text_pooling: Literal["mean", "cls"] = Field(
        "mean", description="pooled text vector: mean over real tokens (as sentence-transformers models) or the first token"
    )
    max_length: int = Field(32, ge=3, description="max caption tokens, longer captions are truncated")
    vocabulary: Vocabulary = vocabulary_field()

    @model_validator(mode="after")
    def _one_source_of_vision_weights(self) -> DualParams:
        """Refuse at validation, not after a download, weights that cannot or would not be used."""
        if self.vision_pretrained and self.vision_checkpoint is not None:
            raise ValueError("set vision_pretrained or vision_checkpoint, not both")
        if self.vision_pretrained and self.vision == TINY:
            raise ValueError("vision 'tiny' has no pretrained weights; name a timm model or give vision_checkpoint")
        return self


@hookimpl
def mmreg_register_encoders(register: Any) -> None:
    register(
        "dual",
        "mmreg_plugins.encoders.dual:build",
        params=DualParams,
        help="timm vision model + transformers text model, each its own preprocessing",
    )
