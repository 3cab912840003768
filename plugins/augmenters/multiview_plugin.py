"""Registers the `multiview` augmenter: parameters and help, no torch; multiview.py is imported on first build."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class MultiViewParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scale_min: float = Field(
        0.5, gt=0, le=1, description="smallest crop, as a fraction of the image area, of the random resized crop"
    )
    path: str | None = Field(
        None, description="a pipeline saved with albumentations.save (.json, .yaml or .yml) to make each view; replaces the built-in one"
    )


@hookimpl
def mmreg_register_augmenters(register):
    register(
        "multiview",
        "mmreg_plugins.augmenters.multiview:MultiViewAugment",
        params=MultiViewParams,
        help="two augmented views of each image (SimCLR-style crop, flip, colour, grayscale, blur) for the multi-view loss",
    )
