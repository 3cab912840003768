"""Registers the `progressive` PEFT strategy: parameters and help, no torch; progressive.py is imported on first build."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class ProgressiveParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    frozen: list[Literal["vision", "text", "bridge"]] = Field(
        ["vision"], min_length=1, description="towers held frozen at first while the rest of the model trains"
    )
    frozen_for: int = Field(1, ge=1, description="how long they stay frozen, in `unit`s; then every part trains")
    unit: Literal["epochs", "steps"] = Field("epochs", description="unit of frozen_for: epochs or optimizer steps")
    under: str = Field("full", description="the strategy deciding what trains once unfrozen (full, lora, peft, freeze)")
    under_params: dict[str, Any] = Field(default_factory=dict, description="that strategy's parameters")


@hookimpl
def mmreg_register_peft_strategies(register):
    register(
        "progressive",
        "mmreg_plugins.peft.progressive:Progressive",
        params=ProgressiveParams,
        help="freeze a tower for the first steps/epochs, then train both (over full, lora, ...)",
    )
