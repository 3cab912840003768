"""Registers the `clip` encoder: parameters and help, no torch; clip.py is imported on first build."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mmreg.hookspecs import hookimpl


class ClipParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pretrained: str | None = Field(
        None,
        description="directory saved with save_pretrained or a cached hub id; when set the preset fields are ignored",
    )
    preset: Literal["tiny"] = Field("tiny", description="random-init architecture used when pretrained is unset")
    image_size: int = Field(32, ge=8, description="side of the square input images in pixels")
    patch_size: int = Field(8, ge=1, description="side of the vision patches in pixels")
    hidden_size: int = Field(64, ge=1, description="width of both transformers")
    layers: int = Field(2, ge=1, description="transformer layers per tower")
    heads: int = Field(4, ge=1, description="attention heads per layer")
    projection_dim: int = Field(64, ge=1, description="width of the projected pooled embeddings")
    max_length: int = Field(32, ge=3, description="max caption tokens, longer captions are truncated")

    @model_validator(mode="after")
    def _preset_is_buildable(self) -> ClipParams:
        """Refuse at validation, not deep inside transformers, a preset that cannot be built."""
        if self.pretrained is None and self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of heads {self.heads}")
        if self.pretrained is None and self.patch_size > self.image_size:
            raise ValueError(f"patch_size {self.patch_size} is larger than image_size {self.image_size}")
        return self


@hookimpl
def mmreg_register_encoders(register: Any) -> None:
    register(
        "clip",
        "mmreg_plugins.encoders.clip:ClipEncoder.create",
        params=ClipParams,
        help="Hugging Face CLIP: tiny random-init preset or a pretrained checkpoint",
    )
