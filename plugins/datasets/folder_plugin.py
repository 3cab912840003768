"""Registers the `folder` dataset: parameters and help, no torch; folder.py is imported on first build."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmreg.hookspecs import hookimpl


class FolderParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str = Field(description="folder holding one sub-folder of images per class (or train/ and val/ of them)")
    template: str = Field("a photo of a {label}", description="caption of each image; {label} is its folder's name")
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of each class held out for validation when root has no train/ and val/"
    )

    @field_validator("template")
    @classmethod
    def _fills_with_label_only(cls, template: str) -> str:
        """Refuse here, not when the first caption is made, a template naming another field."""
        try:
            template.format(label="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"template may use only {{label}}, e.g. 'a photo of a {{label}}' ({exc!r})") from None
        return template


@hookimpl
def mmreg_register_datasets(register):
    register(
        "folder",
        "mmreg_plugins.datasets.folder:Folder",
        params=FolderParams,
        help="one sub-folder of images per class; captions from a template naming the class",
    )
