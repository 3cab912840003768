"""`multiview`: two differently augmented views of each image, for the multi-view (view-consistency) loss."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from mmreg.components import Augmenter
from mmreg_plugins.augmenters.albumentations import apply, import_albumentations, load_pipeline

if TYPE_CHECKING:
    import numpy as np

    from mmreg.components import Sample

WHO = "augmenter 'multiview'"
MAX_SIZES = 256  # built-in pipelines kept, one per image size


def simclr_pipeline(height: int, width: int, scale_min: float) -> Any:
    """SimCLR's view recipe: crop and resize back to the image's size, flip, colour jitter, grayscale, blur.

    Strong, mostly photometric changes give the consistency loss something to be
    invariant to; the crop keeps both views the size of the original.
    """
    A = import_albumentations()
    return A.Compose(
        [
            A.RandomResizedCrop(size=(height, width), scale=(scale_min, 1.0)),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8),
            A.ToGray(p=0.2),
            A.GaussianBlur(sigma_limit=(0.1, 2.0), p=0.5),
        ]
    )


class MultiViewAugment(Augmenter):
    """Sets ``sample.views`` to two views drawn independently; ``sample.image`` and the texts stay as they are.

    The views are made from the image as it reaches this augmenter, so list image
    augmenters that the views should share before it. Each view takes its own seed
    from ``rng``, so the two differ and repeat exactly for the same ``rng``.
    """

    gives_views: ClassVar[bool] = True  # lets a loss that needs "views" be checked before training

    def __init__(self, *, scale_min: float, path: str | None, seed: int) -> None:
        del seed  # every draw comes from the per-sample rng
        self.scale_min = scale_min
        self.pipeline = load_pipeline(path, "multiview") if path is not None else None
        self._by_size: dict[tuple[int, int], Any] = {}  # the built-in crop is sized per image

    def pipeline_for(self, height: int, width: int) -> Any:
        if self.pipeline is not None:
            return self.pipeline
        if (height, width) not in self._by_size:
            if len(self._by_size) >= MAX_SIZES:  # photos of many sizes: rebuilding costs under a millisecond
                self._by_size.clear()
            self._by_size[height, width] = simclr_pipeline(height, width, self.scale_min)
        return self._by_size[height, width]

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        pipeline = self.pipeline_for(sample.image.height, sample.image.width)
        views = (apply(pipeline, sample.image, rng, WHO), apply(pipeline, sample.image, rng, WHO))
        return dataclasses.replace(sample, views=views)
