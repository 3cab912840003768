"""Registers the `itm` loss: parameters and help, no torch; itm.py is imported on first build."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class ITMParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    negatives: int = Field(
        1, ge=1, description="hard negatives per image and per caption, each scored by the fusion (ALBEF, BLIP: 1)",
        json_schema_extra={"search": {"low": 1, "high": 4}},
    )
    sampling: Literal["softmax", "top"] = Field(
        "softmax",
        description="softmax: drawn by the softmax weight of the contrastive similarity, as ALBEF (a near-duplicate caption is not "
        "always picked); top: the K most similar non-matches",
    )
    temperature: float = Field(0.07, gt=0, description="temperature of the softmax the negatives are drawn by (CLIP's initial 0.07)")


@hookimpl
def mmreg_register_losses(register):
    register(
        "itm",
        "mmreg_plugins.losses.itm:ITM",
        params=ITMParams,
        help="image-text matching on hard negatives from the contrastive similarities, with a contrastive loss (ALBEF, BLIP)",
    )
