"""Registers the `vqa` task: parameters and help, no torch; vqa.py is imported on first build."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmreg.hookspecs import hookimpl


class VqaParams(BaseModel):
    """How answers are given: scored over the answer vocabulary, or generated."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    min_answer_count: int = Field(
        1, ge=1, description="an answer enters the vocabulary when at least this many human answers in training give it (normalised)"
    )
    answer: Literal["auto", "classify", "generate"] = Field(
        "auto",
        description="classify: a head scores the answer vocabulary over fused features (ViLT); generate: the language model the "
        "encoder conditions on the image writes the answer after the prompt (BLIP-2), open-ended; auto: generate where the encoder can",
    )
    prompt: str = Field("Question: {question} Answer:", description="generation: what the language model reads, {question} the question")
    num_beams: int = Field(1, ge=1, description="generation: beam search width; 1 is greedy decoding")
    max_new_tokens: int = Field(10, ge=1, description="generation: the most tokens of an answer")

    @field_validator("prompt")
    @classmethod
    def _names_the_question(cls, value: str) -> str:
        try:
            value.format(question="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"the prompt may name only {{question}} (got {value!r}: {exc})") from exc
        return value


@hookimpl
def mmreg_register_tasks(register):
    register(
        "vqa",
        "mmreg_plugins.tasks.vqa:VisualQuestionAnswering",
        params=VqaParams,
        help="answer a question about the image, over the answer vocabulary or generated: VQA accuracy",
    )
