"""Registers the `concat` fusion: parameters and help, no torch; concat.py is imported on first build."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class ConcatParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(256, ge=1, description="MLP width (unused when layers=1)")
    layers: int = Field(2, ge=1, description="MLP layers; the last maps to the shared dim")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout after each hidden MLP layer")
    interactions: bool = Field(
        True,
        description="also feed v*t and |v-t| (InferSent features) so the MLP can compare the vectors; "
        "false gives the plain [v, t]",
    )


@hookimpl
def mmreg_register_fusions(register):
    register(
        "concat",
        "mmreg_plugins.fusions.concat:ConcatFusion",
        params=ConcatParams,
        help="MLP over the pooled vectors [v, t, v*t, |v-t|] (or [v, t]); works with pooled-only encoders",
    )
