"""`albumentations`: image augmentation by an albumentations pipeline, a built-in preset or one saved to a file."""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from mmreg.components import Augmenter
from mmreg.errors import ConfigError

if TYPE_CHECKING:
    from mmreg.components import Sample

FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}


def import_albumentations() -> Any:
    """albumentations, imported on first use (it pulls in OpenCV) and without its update check, which would reach PyPI."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


def preset_pipeline(preset: str, flip: bool = True) -> Any:
    """The docs' pipelines, in albumentations 2.x terms; neither changes the image size.

    ``light`` is the basic one; ``strong`` the docs' full one, less RandomGridShuffle
    and ElasticTransform (shuffling tiles breaks captions that say where things are),
    with CoarseDropout's 2.x ranges in place of the removed Cutout.
    """
    A = import_albumentations()
    import cv2

    reflect = cv2.BORDER_REFLECT_101  # no black corners for the encoder to learn
    geometry = [A.HorizontalFlip(p=0.5)] if flip else []
    geometry.append(
        A.Affine(translate_percent=(-0.0625, 0.0625), scale=(0.9, 1.1), rotate=(-15, 15), border_mode=reflect, p=0.5)
    )
    if preset == "light":
        return A.Compose(
            [
                *geometry,
                A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
                A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=20, val_shift_limit=10, p=0.3),
            ]
        )
    return A.Compose(
        [
            *geometry,
            A.OneOf(
                [
                    A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2),
                    A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1),
                    A.HueSaturationValue(hue_shift_limit=20, sat_shift_limit=30, val_shift_limit=20),
                ],
                p=0.5,
            ),
            A.OneOf([A.MotionBlur(blur_limit=5), A.MedianBlur(blur_limit=5), A.GaussianBlur(blur_limit=(3, 5))], p=0.2),
            A.OneOf([A.RandomGamma(gamma_limit=(80, 120)), A.CLAHE(clip_limit=4.0)], p=0.2),
            A.OneOf([A.GridDistortion(border_mode=reflect), A.OpticalDistortion(border_mode=reflect)], p=0.1),
            A.CoarseDropout(num_holes_range=(1, 8), hole_height_range=(0.05, 0.1), hole_width_range=(0.05, 0.1), p=0.2),
        ]
    )


def load_pipeline(path: str, who: str) -> Any:
    """A pipeline saved with ``albumentations.save``, checked on a probe image so a bad one fails at build, not mid-run."""
    A = import_albumentations()
    file = Path(path).expanduser()
    fix = "save one with albumentations.save(transform, path) or unset path"
    if not file.is_file():
        raise ConfigError(f"augmenter '{who}': pipeline file {file} not found; {fix}")
    data_format = FORMATS.get(file.suffix.lower())
    if data_format is None:
        raise ConfigError(f"augmenter '{who}': cannot tell the format of {file} from its suffix; name it .json, .yaml or .yml")
    try:
        pipeline = A.load(str(file), data_format=data_format)
    except Exception as exc:  # json, yaml and albumentations each raise their own kinds
        detail = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"augmenter '{who}': cannot load pipeline {file} ({type(exc).__name__}: {detail}); {fix}") from exc
    if isinstance(pipeline, A.BasicTransform):
        pipeline = A.Compose([pipeline])
    if not isinstance(pipeline, A.BaseCompose):
        raise ConfigError(f"augmenter '{who}': {file} holds a {type(pipeline).__name__}, not a transform pipeline; {fix}")
    probe = np.linspace(0, 255, 256 * 256 * 3).astype(np.uint8).reshape(256, 256, 3)
    pipeline.set_random_seed(0)
    try:
        out = pipeline(image=probe)["image"]
    except Exception:  # it may need larger images than the probe; a real failure is reported per image
        return pipeline
    to_image(out, f"augmenter '{who}' pipeline {file}")
    return pipeline


def apply(pipeline: Any, image: Image.Image, rng: np.random.Generator, who: str) -> Image.Image:
    """Run ``pipeline`` once on ``image`` with random draws taken only from ``rng``; ``who`` names it in errors.

    The pipeline's generators are replaced before each call (albumentations 2.x
    keeps its own, shared by every transform), so the result depends on ``rng``
    alone: not on earlier calls, other samples or global random state.
    """
    seed = int(rng.integers(2**63))
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
    try:
        out = pipeline(image=np.array(image.convert("RGB")))["image"]
    except Exception as exc:  # a user's pipeline may not fit the image (a crop larger than it)
        detail = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(
            f"{who} failed on a {image.width}x{image.height} image ({type(exc).__name__}: {detail}); "
            f"make the pipeline fit the dataset's images"
        ) from exc
    return to_image(out, who)


def to_image(out: Any, who: str) -> Image.Image:
    """The pipeline's output as a PIL RGB image, refusing what the encoder could not read."""
    if not (isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3):
        got = f"{out.dtype} array of shape {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ConfigError(
            f"{who} gave a {got}, not an HxWx3 uint8 image; "
            f"remove Normalize and ToTensorV2 from the pipeline (the encoder normalises)"
        )
    return Image.fromarray(out, "RGB")


class AlbumentationsAugment(Augmenter):
    """Replaces ``sample.image`` by the pipeline's output; the texts and views are left alone.

    ``path`` wins over ``preset``: a saved pipeline is used as it is, size changes
    included (the encoder resizes anyway); the presets keep the image size.
    """

    def __init__(self, *, preset: str | None, path: str | None, flip: bool, seed: int) -> None:
        del seed  # every draw comes from the per-sample rng
        if path is not None:
            self.pipeline = load_pipeline(path, "albumentations")
        elif preset is not None:
            self.pipeline = preset_pipeline(preset, flip)
        else:
            raise ConfigError("augmenter 'albumentations' has neither preset nor path; set preset to light or strong, or path to a saved pipeline")

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return dataclasses.replace(sample, image=apply(self.pipeline, sample.image, rng, "augmenter 'albumentations'"))
