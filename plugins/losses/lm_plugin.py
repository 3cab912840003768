"""Registers the `lm` loss: parameters and help, no torch; lm.py is imported on first build."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class LanguageModelingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label_smoothing: float = Field(0.1, ge=0, lt=1, description="mass spread over the other tokens (BLIP's 0.1)")


@hookimpl
def mmreg_register_losses(register):
    register(
        "lm",
        "mmreg_plugins.losses.lm:LanguageModeling",
        params=LanguageModelingParams,
        help="token cross-entropy of a text decoder (captioning)",
    )
