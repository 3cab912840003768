"""Registers the `freeze` PEFT strategy: parameters and help, no torch; freeze.py is imported on first build."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class FreezeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    towers: list[Literal["vision", "text", "bridge"]] = Field(
        ["vision", "text"], min_length=1, description="towers to freeze; the others train in full"
    )


@hookimpl
def mmreg_register_peft_strategies(register):
    register(
        "freeze",
        "mmreg_plugins.peft.freeze:FreezeTowers",
        params=FreezeParams,
        help="freeze the towers: a linear probe on projections/fusion/head",
    )
