"""`peft`: any other peft method that adapts tower modules (IA3, LoHa, LoKr, DoRA, ...) by name, per tower."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mmreg.hookspecs import hookimpl
from mmreg.params import TowerSetting

if TYPE_CHECKING:  # torch and peft load when a run builds the strategy, not when it registers
    from mmreg.adapters import TowerAdapters


class PeftParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = Field("ia3", description="the peft method (its PeftType): ia3, loha, lokr, lora (use_dora=true for DoRA), ...")
    vision: TowerSetting = Field(default_factory=dict, description="the method's config fields for the vision tower, or 'full' / 'freeze'")
    text: TowerSetting = Field(default_factory=dict, description="the method's config fields for the text tower, or 'full' / 'freeze'")
    bridge: TowerSetting = Field(
        "full", description="the method's config fields for the tower linking image to language model (BLIP-2's Q-Former), or 'full' / 'freeze'"
    )

    @model_validator(mode="after")
    def _fields_of_the_method(self) -> PeftParams:
        from mmreg.adapters import check_setting, method_config

        method_config(self.method)
        for name in ("vision", "text", "bridge"):
            check_setting(self.method, getattr(self, name), f"peft.{name}")
        return self


def build(*, method: str, vision: TowerSetting, text: TowerSetting, bridge: TowerSetting = "full", **_context: Any) -> TowerAdapters:
    from mmreg.adapters import TowerAdapters

    return TowerAdapters(method.lower(), {"vision": vision, "text": text, "bridge": bridge})


@hookimpl
def mmreg_register_peft_strategies(register):
    register("peft", build, params=PeftParams, help="any peft method by name per tower (ia3, loha, lokr, DoRA via lora + use_dora)")
