"""Registers the `vqa` dataset: parameters and help, no torch; vqa.py is imported on first build."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class VqaSplitFiles(BaseModel):
    model_config = ConfigDict(extra="forbid")

    questions: str | None = Field(None, description="VQA v2 questions JSON ({'questions': [{question_id, image_id, question}], 'data_subtype'})")
    annotations: str | None = Field(None, description="VQA v2 annotations JSON ({'annotations': [{question_id, answers, multiple_choice_answer, answer_type}]})")
    images: str | None = Field(None, description="directory of the images of the VQA v2 layout")
    file: str | None = Field(None, description="instead: a CSV or JSON Lines file with image (relative to it), question, answers (a list, or ';'-separated)")


class VqaParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: VqaSplitFiles = Field(description="the training split's files")
    val: VqaSplitFiles = Field(description="the validation split's files")
    file_pattern: str = Field(
        "COCO_{data_subtype}_{image_id:012d}.jpg", description="image file name from image_id and the questions file's data_subtype (COCO's)"
    )


@hookimpl
def mmreg_register_datasets(register):
    register(
        "vqa",
        "mmreg_plugins.datasets.vqa:VqaDataset",
        params=VqaParams,
        help="visual questions with human answers: VQA v2 layout, or CSV / JSON Lines",
    )
