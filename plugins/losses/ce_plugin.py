"""Registers the `ce` loss: parameters and help, no torch; ce.py is imported on first build."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class CrossEntropyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label_smoothing: float = Field(0.0, ge=0, lt=1, description="mass spread uniformly over the other classes")


@hookimpl
def mmreg_register_losses(register):
    register(
        "ce",
        "mmreg_plugins.losses.ce:CrossEntropy",
        params=CrossEntropyParams,
        help="cross-entropy over class or answer logits",
    )
