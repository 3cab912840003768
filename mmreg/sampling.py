"""Batch order that depends only on (seed, epoch), sharded across processes, resumable mid-epoch,
with one caption per image per epoch where images have several."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from .components import Dataset


def caption_groups(image_ids: Sequence[str | None]) -> list[int] | None:
    """Per row, the index of its image (rows sharing an ``image_id`` are captions of one image;
    None: the row's own); None when no two rows share an image, so every row is its own pair."""
    index: dict[tuple[bool, object], int] = {}
    groups = [index.setdefault((image_id is None, row if image_id is None else image_id), len(index)) for row, image_id in enumerate(image_ids)]
    return None if len(index) == len(groups) else groups


def split_groups(dataset: Dataset, name: str, view: Sequence[object], limit: int | None = None) -> list[int] | None:
    """``caption_groups`` of a split as the model reads it (``mmreg.data.SplitView``: unusable rows
    left out), by ``mmreg.identity.split_keys``: the dataset's image ids, and where it gives none the
    image's content for a split of up to ``limit`` rows (None: the default ``data.full_check_max``).
    None for a stream: its training batches are read in order and not regrouped. A dataset of
    questions ("question" in ``Dataset.fields``: VQA) is grouped by its own ids only: several
    questions about one image are distinct examples, not captions of it."""
    from .config import DataConfig
    from .identity import split_keys
    from .streams import StreamSplit

    if isinstance(view, StreamSplit):
        return None
    if "question" in dataset.fields:
        limit = 0  # no row is decoded for its content
    elif limit is None:
        limit = DataConfig.model_fields["full_check_max"].default
    return caption_groups(split_keys(dataset, name, view, limit))


class EpochBatches(Sampler[list[int]]):
    """Each epoch a fresh permutation seeded by (seed, epoch), cut into global batches of
    ``batch_size * world`` samples; process ``rank`` takes its slice of each global batch.

    The concatenation of every process's batch is exactly the single-process batch
    of the global size, and ``start_at`` skips batches already trained on, so a
    resumed run sees the data a never-interrupted run would.

    With ``groups`` (``caption_groups``: the image of each row) an epoch is a permutation of the
    images, each with one of its captions drawn at random (seeded by (seed, epoch)): a global batch
    holds every image at most once, so a contrastive loss never treats another caption of an
    image as a negative for it, and each epoch sees every image once.
    """

    def __init__(self, size: int, batch_size: int, seed: int, *, rank: int = 0, world: int = 1, groups: Sequence[int] | None = None) -> None:
        self.size, self.batch_size, self.seed, self.rank, self.world = size, batch_size, seed, rank, world
        self.epoch, self.start = 0, 0
        self.members: list[torch.Tensor] | None = None
        if groups is not None:
            order = torch.as_tensor(groups).argsort(stable=True)
            counts = torch.bincount(torch.as_tensor(groups))
            self.members = list(order.split(counts.tolist()))
            self.size = len(self.members)

    def set_epoch(self, epoch: int, start_at: int = 0) -> None:
        self.epoch, self.start = epoch, start_at

    def __len__(self) -> int:
        return self.size // (self.batch_size * self.world)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        if self.members is not None:  # a caption of each image, then the images in ``order``
            draws = torch.rand(self.size, generator=generator).tolist()
            rows = [int(m[int(u * len(m))]) for m, u in zip(self.members, draws, strict=True)]
            order = [rows[i] for i in order]
        global_batch = self.batch_size * self.world
        for b in range(self.start, len(self)):
            first = b * global_batch + self.rank * self.batch_size
            yield order[first : first + self.batch_size]
