"""Registers the `hf` dataset: parameters and help, no torch; hf.py is imported on first build."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class HfParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="a save_to_disk directory, a data file or folder (parquet, arrow, csv, json, images), or a hub id in the local cache")
    builder: str | None = Field(None, description="the datasets builder for path (parquet, arrow, csv, json, imagefolder); unset: from the suffix, or a hub id")
    config_name: str | None = Field(None, description="the hub dataset's configuration, where it has several")
    image_column: str = Field("image", description="column holding each image (an Image feature, bytes or a path relative to the data file)")
    caption_column: str = Field("caption", description="column holding each caption")
    label_column: str | None = Field(None, description="column holding a class label (ClassLabel names become the classes); set it to train classification")
    id_column: str | None = Field(None, description="column naming each row's image (rows sharing it are captions of one image); unset: the image path, if the image column holds paths")
    train_split: str = Field("train", description="the split to train on")
    val_split: str | None = Field(None, description="the split to validate on; unset: validation, val, valid, dev or test if present, else val_fraction of train")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of train held out (seeded by the run seed) when there is no validation split")
    streaming: bool = Field(False, description="read rows in order instead of loading (or memory-mapping) the data")
    shuffle_buffer: int = Field(1000, ge=0, description="with streaming: rows held for shuffling the training stream")


@hookimpl
def mmreg_register_datasets(register):
    register(
        "hf",
        "mmreg_plugins.datasets.hf:HfDataset",
        params=HfParams,
        help="a Hugging Face dataset: save_to_disk directory, parquet/arrow/csv/json/image files, or a cached hub id",
    )
