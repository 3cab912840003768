"""`lora`: peft's LoRA on each tower with its own settings, as the docs fine-tune CLIP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core.core_schema import ValidationInfo

from mmreg.hookspecs import hookimpl
from mmreg.params import TowerSetting

if TYPE_CHECKING:  # torch and peft load when a run builds the strategy, not when it registers
    from mmreg.adapters import TowerAdapters

# The docs' settings (LoRA on CLIP): target_modules unset takes the encoder's declared
# defaults for the tower (q_proj/v_proj on CLIP, qkv on a timm ViT).
VISION = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.1}
TEXT = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1}


class LoraParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vision: TowerSetting = Field(
        default_factory=lambda: dict(VISION),
        description="LoraConfig fields for the vision tower (over r=16, lora_alpha=32, lora_dropout=0.1), or 'full' / 'freeze'",
    )
    text: TowerSetting = Field(
        default_factory=lambda: dict(TEXT),
        description="LoraConfig fields for the text tower (over r=8, lora_alpha=16, lora_dropout=0.1), or 'full' / 'freeze'",
    )

    bridge: TowerSetting = Field(
        "full",
        description="LoraConfig fields for the tower linking image to language model (BLIP-2's Q-Former), or 'full' (as the "
        "encoder set it: BLIP-2's trains) / 'freeze'; encoders without one ignore 'full'",
    )

    @field_validator("vision", "text", "bridge")
    @classmethod
    def _over_defaults(cls, value: TowerSetting, info: ValidationInfo) -> TowerSetting:
        if isinstance(value, dict):
            value = {**(VISION if info.field_name == "vision" else TEXT), **value}  # a bridge adapter as a text one
        from mmreg.adapters import check_setting

        return check_setting("lora", value, f"peft.{info.field_name}")


def build(*, vision: TowerSetting, text: TowerSetting, bridge: TowerSetting = "full", **_context: Any) -> TowerAdapters:
    from mmreg.adapters import TowerAdapters

    return TowerAdapters("lora", {"vision": vision, "text": text, "bridge": bridge})


@hookimpl
def mmreg_register_peft_strategies(register):
    register("lora", build, params=LoraParams, help="LoRA adapters per tower (peft), base weights frozen")
