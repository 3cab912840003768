"""Registers the `vilt` encoder: parameters and help, no torch; vilt.py is imported on first build."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mmreg.hookspecs import hookimpl
from mmreg.params import Vocabulary, vocabulary_field


class ViltParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pretrained: str | None = Field(
        None,
        description="directory saved with save_pretrained (ViltModel, ViltForQuestionAnswering or ViltForImageAndTextRetrieval, "
        "with its tokenizer and ViltImageProcessor) or a cached hub id (e.g. dandelin/vilt-b32-finetuned-vqa); when set the preset fields are ignored",
    )
    preset: Literal["tiny"] = Field("tiny", description="random-init architecture used when pretrained is unset")
    shortest_edge: int = Field(64, ge=32, description="tiny preset: images resized so their shortest side is this (ViLT: 384), the longest at most 1333/800 of it, sides multiples of 32")
    patch_size: int = Field(16, ge=1, description="tiny preset: side of the image patches in pixels (ViLT: 32)")
    hidden_size: int = Field(32, ge=1, description="tiny preset: width of the transformer")
    layers: int = Field(2, ge=1, description="tiny preset: transformer layers")
    heads: int = Field(4, ge=1, description="tiny preset: attention heads per layer")
    max_length: int = Field(40, ge=3, description="max question or caption tokens (ViLT: 40)")
    max_image_length: int = Field(-1, description="patches kept per image, sampled at random from the seeded generator as ViLT trains; -1 keeps all")
    vocabulary: Vocabulary = vocabulary_field()

    @model_validator(mode="after")
    def _preset_is_buildable(self) -> ViltParams:
        if self.pretrained is None and self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of heads {self.heads}")
        return self


@hookimpl
def mmreg_register_encoders(register):
    register(
        "vilt",
        "mmreg_plugins.encoders.vilt:ViltEncoder.create",
        params=ViltParams,
        help="ViLT, single-stream: patches and tokens in one transformer that fuses them (transformers)",
    )
