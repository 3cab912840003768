"""Registers the `multiview` loss: parameters and help, no torch; multiview.py is imported on first build."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class MultiViewParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.1, gt=0, description="fixed temperature of the view consistency (SimCLR: 0.1)")
    alignment_temperature: float = Field(0.07, gt=0, description="initial temperature of the alignment, learned (CLIP: 0.07)")
    max_scale: float = Field(100.0, gt=0, description="upper bound on 1/temperature of the alignment, as CLIP clamps it")
    consistency_weight: float = Field(1.0, ge=0, description="weight of the view-consistency term")
    alignment_weight: float = Field(1.0, ge=0, description="weight of the image-text alignment term")


@hookimpl
def mmreg_register_losses(register):
    register(
        "multiview",
        "mmreg_plugins.losses.multiview:MultiView",
        params=MultiViewParams,
        help="InfoNCE between two augmented views of each image plus symmetric image-text InfoNCE",
    )
