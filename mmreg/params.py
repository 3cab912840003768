"""Parameter schemas that several plugins share, kept free of torch so registering a plugin stays light."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Vocabulary = Literal["bytes", "words"]  # mmreg.text.VOCABULARIES
TOWER_MODES = ("full", "freeze")  # a tower left as it is, or frozen, instead of adapted
TowerSetting = dict[str, Any] | str


def vocabulary_field() -> Any:
    """The ``vocabulary`` parameter of a tokenizer built by ``mmreg.text.build_tokenizer``. A run
    recorded before it existed used word-level vocabularies: ``before`` says so, and
    ``mmreg.recorded`` gives such a run "words" when it rebuilds it."""
    return Field(
        "bytes",
        description="tiny tokenizer: bytes (byte-level BPE: any text, merges taught by the training captions) or words "
        "(the training captions' words, any other word [UNK])",
        json_schema_extra={"before": "words"},
    )


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


class VisionPresetParams(BaseModel):
    """A transformers checkpoint by ``pretrained``, else a tiny random-init vision transformer (with
    its text side) built from these fields; checked here so a preset that cannot be built fails at
    validation, not deep inside transformers. The clip and blip encoders subclass it."""

    model_config = ConfigDict(extra="forbid")

    pretrained: str | None = Field(
        None,
        description="directory saved with save_pretrained or a cached hub id; when set the preset fields are ignored",
    )
    preset: Literal["tiny"] = Field("tiny", description="random-init architecture used when pretrained is unset")
    image_size: int = Field(32, ge=8, description="side of the square input images in pixels")
    patch_size: int = Field(8, ge=1, description="side of the vision patches in pixels")
    hidden_size: int = Field(64, ge=1, description="width of both transformers")
    layers: int = Field(2, ge=1, description="transformer layers per tower")
    heads: int = Field(4, ge=1, description="attention heads per layer")
    max_length: int = Field(32, ge=3, description="max caption tokens, longer captions are truncated")
    vocabulary: Vocabulary = vocabulary_field()

    @model_validator(mode="after")
    def _preset_is_buildable(self) -> VisionPresetParams:
        if self.pretrained is None and self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of heads {self.heads}")
        if self.pretrained is None and self.patch_size > self.image_size:
            raise ValueError(f"patch_size {self.patch_size} is larger than image_size {self.image_size}")
        return self
