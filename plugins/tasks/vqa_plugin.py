"""Registers the `vqa` task: parameters and help, no torch; vqa.py is imported on first build."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class VqaParams(BaseModel):
    """The answer vocabulary."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    min_answer_count: int = Field(
        1, ge=1, description="an answer enters the vocabulary when at least this many human answers in training give it (normalised)"
    )


@hookimpl
def mmreg_register_tasks(register):
    register(
        "vqa",
        "mmreg_plugins.tasks.vqa:VisualQuestionAnswering",
        params=VqaParams,
        help="answer a question about the image over the answer vocabulary: VQA accuracy",
    )
