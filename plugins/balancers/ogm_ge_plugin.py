"""Registers the `ogm_ge` balancer: parameters and help, no torch; ogm_ge.py is imported on first build."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mmreg.hookspecs import hookimpl


class OGMGEParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(
        0.8, gt=0, description="strength: the dominant modality's gradients are scaled by 1 - tanh(alpha * ratio)",
        json_schema_extra={"search": {"low": 0.1, "high": 2.0, "log": True}},
    )
    noise: bool = Field(True, description="add Gaussian noise with each gradient's standard deviation (the 'GE'); false is plain OGM")
    modulation_starts: int = Field(0, ge=0, description="first epoch (from 0) the gradients are modulated")
    modulation_ends: int | None = Field(None, ge=0, description="last epoch modulated (inclusive); none: to the end of training")
    parameters: Literal["all", "conv"] = Field(
        "all", description="which of each modality's weights: all, or 4-D convolution kernels only as the reference code"
    )

    @model_validator(mode="after")
    def _window(self) -> OGMGEParams:
        if self.modulation_ends is not None and self.modulation_ends < self.modulation_starts:
            raise ValueError(f"modulation_ends ({self.modulation_ends}) is before modulation_starts ({self.modulation_starts})")
        return self


@hookimpl
def mmreg_register_balancers(register):
    register(
        "ogm_ge",
        "mmreg_plugins.balancers.ogm_ge:OGMGE",
        params=OGMGEParams,
        help="OGM-GE (Peng et al., CVPR 2022): slow the dominant modality's gradients by 1 - tanh(alpha * ratio), plus noise",
    )
