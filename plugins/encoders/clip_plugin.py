"""Registers the `clip` encoder: parameters and help, no torch; clip.py is imported on first build."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mmreg.hookspecs import hookimpl
from mmreg.params import VisionPresetParams


class ClipParams(VisionPresetParams):
    projection_dim: int = Field(64, ge=1, description="width of the projected pooled embeddings")


@hookimpl
def mmreg_register_encoders(register: Any) -> None:
    register(
        "clip",
        "mmreg_plugins.encoders.clip:ClipEncoder.create",
        params=ClipParams,
        help="Hugging Face CLIP: tiny random-init preset or a pretrained checkpoint",
    )
