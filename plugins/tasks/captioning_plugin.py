"""Registers the `captioning` task: parameters and help, no torch; captioning.py is imported on first build."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl
from mmreg.params import Vocabulary, vocabulary_field


class CaptioningParams(BaseModel):
    """How evaluation and `mmreg predict` generate captions."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    num_beams: int = Field(1, ge=1, description="beam search width; 1 is greedy decoding")
    max_new_tokens: int = Field(20, ge=1, description="the most tokens generated per caption")
    prompt: str = Field("", description="text every generated caption starts with (BLIP's 'a picture of'); empty: none")
    vocabulary: Vocabulary = vocabulary_field()  # the new decoder's tokenizer; an encoder's own decoder keeps its encoder's


@hookimpl
def mmreg_register_tasks(register):
    register(
        "captioning",
        "mmreg_plugins.tasks.captioning:Captioning",
        params=CaptioningParams,
        help="generate the caption from the image (BLIP's decoder, or the language model BLIP-2 conditions): CIDEr-D (headline), BLEU-4",
    )
