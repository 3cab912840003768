"""From a dataset's samples to model batches: augmentation, preprocessing, loaders."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .components import Augmenter, Dataset, Encoder, Sample, Samples, Task
from .errors import DataError
from .images import RGB, WHITE, to_rgb
from .streams import IterableSamples, StreamSplit, eval_loader


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
        for augment in self.augmenters:
            sample = augment(sample, rng)
        return sample


IGNORE = -100  # a target outside the training vocabulary: never right, never trained on


class Collate:
    """Preprocesses and tokenizes a whole batch at once, as the encoder expects, and adds
    the task's targets (``Task.targets``); ``task.text`` names the sample field fed as text."""

    def __init__(self, encoder: Encoder, task: Task) -> None:
        self.encoder, self.task = encoder, task

    def __call__(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        batch: dict[str, Any] = self.encoder.pixel_inputs([s.image for s in samples])
        if samples[0].views is not None:
            for i in (0, 1):
                batch[f"view{i}_pixel_values"] = self.encoder.preprocess([s.views[i] for s in samples])  # type: ignore[index]
        batch.update(self.encoder.tokenize([getattr(s, self.task.text) for s in samples]))
        batch.update(self.task.targets(samples))
        return batch


class SplitView(Samples):
    """A split as the model reads it: unusable samples (``data.skip_bad``) left out, and every
    image in RGB as a viewer shows it (``mmreg.images.to_rgb`` onto ``background``)."""

    def __init__(self, samples: Sequence[Sample], drop: set[int], background: RGB = WHITE) -> None:
        self.samples, self.keep, self.background = samples, [i for i in range(len(samples)) if i not in drop], background

    def __len__(self) -> int:
        return len(self.keep)

    def sample(self, index: int) -> Sample:
        sample = self.samples[self.keep[index]]
        return dataclasses.replace(sample, image=to_rgb(sample.image, self.background))


def without_bad(
    dataset: Dataset, name: str, split: str, skip_bad: bool, background: RGB = WHITE
) -> tuple[SplitView, list[str]]:
    """The split, checked before training, and the problems found: unusable samples are an
    error, or (``skip_bad``) left out and returned as "where: problem" lines."""
    samples = dataset.split(split)
    if isinstance(samples, IterableSamples):  # read as a stream: its samples are checked as they are read
        return StreamSplit(samples, background), []  # type: ignore[return-value]
    bad = dataset.check(split)
    if bad and not skip_bad:
        shown = "; ".join(problem for _, problem in bad[:3])
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise DataError(
            f"dataset '{name}' split '{split}': {len(bad)} of {len(samples)} samples unusable: {shown}{more}; "
            f"fix them, or skip them with --set data.skip_bad=true"
        )
    return SplitView(samples, {i for i, _ in bad}, background), [problem for _, problem in bad]


def require_samples(samples: Sequence[Sample], dataset: str, split: str, minimum: int = 1) -> None:
    if len(samples) < minimum:
        raise DataError(
            f"dataset '{dataset}' split '{split}' has {len(samples)} samples, needs at least {minimum}; "
            f"add data or lower the batch size"
        )


def make_loader(
    samples: torch.utils.data.Dataset,
    collate: Collate,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    drop_last: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """Batches built by ``collate`` (tokenised per batch), in ``num_workers`` processes.

    Order depends only on ``seed``, and augmentation is seeded per sample, so the
    number of workers never changes what a run sees.
    """
    if isinstance(samples, StreamSplit):  # each worker reads its own shards (mmreg.streams)
        return eval_loader(samples, collate, batch_size, num_workers=num_workers, pin_memory=pin_memory)
    return DataLoader(
        samples,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
