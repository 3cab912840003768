"""Registers the `digits` dataset: parameters and help, no torch; digits.py is imported on first build."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class DigitsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(32, ge=8, description="side of the square images in pixels (the 8x8 digits are upscaled)")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share of each digit held out for validation")
    caption_names_digit: bool = Field(
        True, description="name the digit in the caption; false makes classification read the image"
    )
    caption_accuracy: float = Field(
        1.0, gt=0, le=1,
        description="share of captions naming the right digit (both splits, seeded); the rest name another digit at random, "
        "so text alone tops out there while the image carries the label: one modality easy and unreliable, as modality-imbalance studies build it",
    )


@hookimpl
def mmreg_register_datasets(register):
    register(
        "digits",
        "mmreg_plugins.datasets.digits:Digits",
        params=DigitsParams,
        help="scikit-learn's 1797 real handwritten 8x8 digits, upscaled; labels 0-9; offline",
    )
