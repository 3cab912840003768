"""Registers the `siglip` loss: parameters and help, no torch; siglip.py is imported on first build."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class SigLIPParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    init_scale: float = Field(10.0, gt=0, description="initial multiplier t on the scores (SigLIP: 10)")
    init_bias: float = Field(-10.0, description="initial bias b, negative as most pairs are negatives (SigLIP: -10)")
    learnable: bool = Field(True, description="learn the scale and bias, as SigLIP does")


@hookimpl
def mmreg_register_losses(register):
    register(
        "siglip",
        "mmreg_plugins.losses.siglip:SigLIP",
        params=SigLIPParams,
        help="pairwise sigmoid loss over scores, learnable scale and bias (SigLIP)",
    )
