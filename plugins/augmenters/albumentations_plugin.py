"""Registers the `albumentations` augmenter: parameters and help, no torch; albumentations.py is imported on first build."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class AlbumentationsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preset: Literal["light", "strong"] | None = Field(
        "light",
        description="built-in pipeline: light (flip, brightness/contrast, hue/saturation, small affine) or "
        "strong (adds blur, gamma/CLAHE, grid/optical distortion, coarse dropout); ignored when path is set",
    )
    path: str | None = Field(
        None, description="a pipeline saved with albumentations.save (.json, .yaml or .yml); replaces the preset"
    )
    flip: bool = Field(
        True, description="include the presets' horizontal flip; set false when captions name left and right (shapes does)"
    )


@hookimpl
def mmreg_register_augmenters(register):
    register(
        "albumentations",
        "mmreg_plugins.augmenters.albumentations:AlbumentationsAugment",
        params=AlbumentationsParams,
        help="albumentations image pipeline: light or strong preset, or one saved with albumentations.save",
    )
