"""From a dataset's samples to model batches: augmentation, preprocessing, loaders."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .components import Augmenter, Encoder, Sample
from .errors import DataError


class AugmentedSplit(torch.utils.data.Dataset):
    """Applies the augmenters to the training split, seeded by (seed, epoch, index)."""

    def __init__(self, samples: Sequence[Sample], augmenters: Sequence[Augmenter], seed: int) -> None:
        self.samples, self.augmenters, self.seed, self.epoch = samples, list(augmenters), seed, 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        sample = self.samples[index]
        if not self.augmenters:
            return sample
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, caption = sample.image, sample.caption
        for augment in self.augmenters:
            image, caption = augment(image, caption, rng)
        return dataclasses.replace(sample, image=image, caption=caption)


IGNORE = -100  # a target outside the training vocabulary: never right, never trained on


class Collate:
    """Preprocesses and tokenizes a whole batch at once, as the encoder expects.

    ``text`` names the sample field fed as text (caption, or question for VQA);
    ``targets`` maps the target field's values to class ids.
    """

    def __init__(self, encoder: Encoder, text: str = "caption", target: str | None = None, targets: Mapping[Any, int] | None = None) -> None:
        self.encoder, self.text, self.target, self.targets = encoder, text, target, targets

    def __call__(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        batch: dict[str, Any] = {"pixel_values": self.encoder.preprocess([s.image for s in samples])}
        batch.update(self.encoder.tokenize([getattr(s, self.text) for s in samples]))
        if self.target is not None:
            values = [getattr(s, self.target) for s in samples]
            ids = [self.targets.get(v, IGNORE) for v in values] if self.targets is not None else values
            batch["labels"] = torch.tensor(ids, dtype=torch.long)
        return batch


def require_samples(samples: Sequence[Sample], dataset: str, split: str, minimum: int = 1) -> None:
    if len(samples) < minimum:
        raise DataError(
            f"dataset '{dataset}' split '{split}' has {len(samples)} samples, needs at least {minimum}; "
            f"add data or lower the batch size"
        )


def make_loader(
    samples: torch.utils.data.Dataset, collate: Collate, batch_size: int, *, shuffle: bool, seed: int, drop_last: bool = False
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        samples, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, collate_fn=collate, generator=generator
    )
