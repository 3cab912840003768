"""`none`: leaves training samples as they are."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmreg.components import Augmenter

if TYPE_CHECKING:
    import numpy as np

    from mmreg.components import Sample


class NoAugment(Augmenter):
    def __init__(self, *, seed: int) -> None:
        del seed  # nothing random to seed

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return sample
