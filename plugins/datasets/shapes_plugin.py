"""Registers the `shapes` dataset: parameters and help, no torch; shapes.py is imported on first build."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class ShapesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train_size: int = Field(4000, ge=1, description="number of training samples")
    val_size: int = Field(256, ge=1, description="number of validation samples")
    image_size: int = Field(64, ge=16, description="side of the square images in pixels")
    noise: float = Field(12.0, ge=0, description="std of the per-pixel background noise (0-255 scale)")
    caption_kind: bool = Field(
        True, description="name the shape kind in the caption; false makes classification rely on the image"
    )


@hookimpl
def mmreg_register_datasets(register):
    register(
        "shapes",
        "mmreg_plugins.datasets.shapes:Shapes",
        params=ShapesParams,
        help="synthetic coloured shapes with captions; offline, deterministic from the seed",
    )
