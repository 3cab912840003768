"""Registers the `blip` encoder: parameters and help, no torch; blip.py is imported on first build."""

from __future__ import annotations

from pydantic import Field

from mmreg.hookspecs import hookimpl
from mmreg.params import VisionPresetParams


class BlipParams(VisionPresetParams):
    pretrained: str | None = Field(
        None,
        description="directory saved with save_pretrained (model + BlipProcessor) or a cached hub id "
        "(e.g. Salesforce/blip-image-captioning-base); when set the preset fields are ignored",
    )
    hidden_size: int = Field(64, ge=1, description="width of the vision transformer and the text decoder")
    layers: int = Field(2, ge=1, description="layers of each transformer")


@hookimpl
def mmreg_register_encoders(register):
    register(
        "blip",
        "mmreg_plugins.encoders.blip:BlipEncoder.create",
        params=BlipParams,
        help="BLIP's ViT + image-grounded text decoder (transformers)",
    )
