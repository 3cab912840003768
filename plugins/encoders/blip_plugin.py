"""Registers the `blip` encoder: parameters and help, no torch; blip.py is imported on first build."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mmreg.hookspecs import hookimpl


class BlipParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pretrained: str | None = Field(
        None,
        description="directory saved with save_pretrained (model + BlipProcessor) or a cached hub id "
        "(e.g. Salesforce/blip-image-captioning-base); when set the preset fields are ignored",
    )
    preset: Literal["tiny"] = Field("tiny", description="random-init architecture used when pretrained is unset")
    image_size: int = Field(32, ge=8, description="side of the square input images in pixels")
    patch_size: int = Field(8, ge=1, description="side of the vision patches in pixels")
    hidden_size: int = Field(64, ge=1, description="width of the vision transformer and the text decoder")
    layers: int = Field(2, ge=1, description="layers of each transformer")
    heads: int = Field(4, ge=1, description="attention heads per layer")
    max_length: int = Field(32, ge=3, description="max caption tokens, longer captions are truncated")

    @model_validator(mode="after")
    def _preset_is_buildable(self) -> BlipParams:
        if self.pretrained is None and self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of heads {self.heads}")
        if self.pretrained is None and self.patch_size > self.image_size:
            raise ValueError(f"patch_size {self.patch_size} is larger than image_size {self.image_size}")
        return self


@hookimpl
def mmreg_register_encoders(register):
    register(
        "blip",
        "mmreg_plugins.encoders.blip:BlipEncoder.create",
        params=BlipParams,
        help="BLIP's ViT + image-grounded text decoder (transformers)",
    )
