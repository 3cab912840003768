"""Registers the `infonce` loss: parameters and help, no torch; infonce.py is imported on first build."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class InfoNCEParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(
        0.07,
        gt=0,
        description="initial softmax temperature (CLIP: 0.07)",
        json_schema_extra={"search": {"low": 0.01, "high": 0.2, "log": True}},
    )
    learnable: bool = Field(True, description="learn the temperature, as CLIP learns its logit scale")
    max_scale: float = Field(100.0, gt=0, description="upper bound on 1/temperature, as CLIP clamps it")


@hookimpl
def mmreg_register_losses(register):
    register(
        "infonce",
        "mmreg_plugins.losses.infonce:InfoNCE",
        params=InfoNCEParams,
        help="symmetric contrastive loss over pairwise scores, learnable temperature (CLIP)",
    )
