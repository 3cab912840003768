"""Parameter schemas that several plugins share, kept free of torch so registering a plugin stays light."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TOWER_MODES = ("full", "freeze")  # a tower left as it is, or frozen, instead of adapted
TowerSetting = dict[str, Any] | str


class AttentionBlockParams(BaseModel):
    """Parameters every attention-block fusion takes; a plugin subclasses it to add its own."""

    model_config = ConfigDict(extra="forbid")

    heads: int = Field(
        4, ge=1, description="attention heads (must divide the shared dim)", json_schema_extra={"search": {"choices": [1, 2, 4, 8]}}
    )
    layers: int = Field(1, ge=1, description="attention blocks", json_schema_extra={"search": {"low": 1, "high": 3}})
    dropout: float = Field(
        0.0, ge=0, lt=1, description="dropout in attention and feed-forward", json_schema_extra={"search": {"low": 0.0, "high": 0.3}}
    )
    ffn_mult: int = Field(4, ge=1, description="feed-forward width as a multiple of the dim")
