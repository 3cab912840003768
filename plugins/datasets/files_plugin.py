"""Registers the `files` dataset: parameters and help, no torch; files.py is imported on first build."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class FilesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: str = Field(description="CSV or JSON Lines file of the training pairs; image paths are relative to it")
    val: str | None = Field(None, description="file of the validation pairs; unset: hold out val_fraction of train")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of train held out for validation when val is unset")
    image_column: str = Field("image_path", description="column holding each image's path")
    caption_column: str = Field("caption", description="column holding each caption")
    label_column: str | None = Field(None, description="column holding a class label; set it to train classification")
    image_id_column: str | None = Field(
        None, description="column holding an id shared by the captions of one image (COCO's image_id); unset: rows naming the same image file"
    )
    format: Literal["auto", "csv", "jsonl"] = Field("auto", description="file format; auto: by suffix (.csv, .jsonl, .json)")


@hookimpl
def mmreg_register_datasets(register):
    register(
        "files",
        "mmreg_plugins.datasets.files:FileSplits",
        params=FilesParams,
        help="image-caption pairs (optional labels) from a CSV or JSON Lines file, images read from disk",
    )
