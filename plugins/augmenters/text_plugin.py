"""Registers the `text` augmenter: parameters and help, no torch; text.py is imported on first build."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class TextParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p_synonym: float = Field(
        0.1, ge=0, le=1, description="chance per word with an entry in the synonym table of replacing it by one of its synonyms"
    )
    p_insert: float = Field(
        0.1, ge=0, le=1, description="chance per word of inserting a copy of a random caption word at a random position"
    )
    p_swap: float = Field(
        0.1, ge=0, le=1, description="chance per word of swapping it with the next one (each word moves at most one place)"
    )
    p_delete: float = Field(0.1, ge=0, le=1, description="chance per word of deleting it (one word always survives)")
    synonyms: dict[str, list[str]] | None = Field(
        None, description="inline synonym table: word -> synonyms; merged over synonyms_file, these win"
    )
    synonyms_file: str | None = Field(None, description="a JSON file holding a synonym table: {word: [synonym, ...]}")


@hookimpl
def mmreg_register_augmenters(register):
    register(
        "text",
        "mmreg_plugins.augmenters.text:TextAugment",
        params=TextParams,
        help="caption augmentation: synonym replacement, insertion, adjacent swap, deletion (captions only)",
    )
