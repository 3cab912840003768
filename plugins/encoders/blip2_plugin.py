"""Registers the `blip2` encoder: parameters and help, no torch; blip2.py is imported on first build."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mmreg.hookspecs import hookimpl
from mmreg.params import VisionPresetParams


class Blip2Params(VisionPresetParams):
    pretrained: str | None = Field(
        None,
        description="directory saved with save_pretrained (Blip2ForConditionalGeneration + Blip2Processor) or a cached hub id "
        "(e.g. Salesforce/blip2-opt-2.7b); when set the preset fields are ignored",
    )
    hidden_size: int = Field(32, ge=1, description="tiny preset: width of the vision transformer, the Q-Former and the language model")
    layers: int = Field(2, ge=1, description="tiny preset: layers of each transformer")
    language_model: Literal["opt", "t5"] = Field(
        "opt", description="tiny preset: a causal language model (OPT) or an encoder-decoder one (T5)"
    )
    num_query_tokens: int = Field(8, ge=1, description="tiny preset: learned queries the Q-Former reads the image with (BLIP-2: 32)")
    max_length: int = Field(32, ge=3, description="max prompt and text tokens the language model reads, image queries aside")
    heads: int = Field(4, ge=1, description="tiny preset: attention heads per layer of each transformer")
    train_vision: bool = Field(
        False,
        description="train the vision transformer too (LAVIS freeze_vit=False), kept in fp32 under bf16/fp16 autocast; "
        "by default it is frozen, as the language model always is",
    )
    frozen_dtype: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="how the frozen language model (and a frozen ViT) are stored: bf16 or fp16 halve their memory, as LAVIS "
        "stores them; what trains stays fp32",
    )


@hookimpl
def mmreg_register_encoders(register):
    register(
        "blip2",
        "mmreg_plugins.encoders.blip2:Blip2Encoder.create",
        params=Blip2Params,
        help="BLIP-2: a Q-Former's image queries condition a frozen language model, OPT or T5 (transformers)",
    )
