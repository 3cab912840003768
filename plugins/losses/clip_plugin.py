"""Registers the `clip` loss: parameters and help, no torch; clip.py is imported on first build."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class CLIPLossParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_scale: float = Field(100.0, gt=0, description="upper bound on exp(logit_scale), as CLIP's training clamps it")


@hookimpl
def mmreg_register_losses(register):
    register(
        "clip",
        "mmreg_plugins.losses.clip:CLIPLoss",
        params=CLIPLossParams,
        help="CLIP's symmetric contrastive loss with the encoder's own logit scale (needs the clip encoder)",
    )
