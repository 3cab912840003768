"""Registers the `webdataset` dataset: parameters and help, no torch; webdataset.py is imported on first build."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class WebDatasetParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: str | list[str] = Field(description="training shards: .tar paths or brace patterns, e.g. shards/train-{000000..000099}.tar")
    val: str | list[str] = Field(description="validation shards, as train")
    image_key: str = Field("jpg;png;webp;jpeg", description="the image file's extension in a sample; ';' separates alternatives, the first present is used")
    caption_key: str = Field("txt;json", description="the caption file's extension; a json holds a string, a list of captions or an object with caption_field")
    caption_field: str = Field("caption", description="in a json caption file holding an object: the key of its caption or list of captions")
    shuffle_buffer: int = Field(1000, ge=0, description="samples held for shuffling the training stream (0: shard order only)")


@hookimpl
def mmreg_register_datasets(register):
    register(
        "webdataset",
        "mmreg_plugins.datasets.webdataset:WebDataset",
        params=WebDatasetParams,
        help="image-caption samples in WebDataset .tar shards, streamed and split across processes and workers",
    )
