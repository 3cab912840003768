"""Streaming splits: data read in order from shards (WebDataset tars, Hugging Face streaming), never indexed.

A dataset's ``split`` may return an ``IterableSamples`` instead of a sequence. The
core cuts it into *lanes*: with R processes and W DataLoader workers there are
R * W lanes, lane ``rank * W + worker``, and the dataset deals its shards to them
(``deal``), so no two processes, nor two workers, read the same sample in an
epoch. Every process runs the same number of batches per epoch, ``len // (R * B)``
(as ``mmreg.sampling.EpochBatches`` does for indexed splits), or data-parallel
training would hang on the process that ran out first: a lane whose shards give
fewer samples than its share reads them again (in a new order), a lane with more
leaves the rest for the next epoch's new deal.

Checked as honestly as files (``check_stream``): a split of up to ``data.full_check_max``
samples has every image decoded once before training, its unusable ones refused, or left out
(``data.skip_bad``); a larger one is read before training only as far as its dataset reads it
to count it, and a sample that fails to decode while loading comes out of the loaders as
``mmreg.badimages.Unreadable``, left out of its batch and counted against ``data.max_unreadable``.

Resume is exact: a lane's order depends only on (seed, epoch, lane), so the
batches already trained are read again and skipped without decoding their images,
and the run continues with the batch an uninterrupted run would have taken, as
long as the number of processes (checked on resume) and ``data.num_workers`` are
those of the checkpoint.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .badimages import Unreadable, UnreadableSample
from .components import Augmenter, Sample
from .errors import DataError
from .images import RGB, WHITE, to_rgb

T = TypeVar("T")


class IterableSamples:
    """A split read as a stream. ``len()`` is the number of samples in one pass (counted or declared).

    ``stream(lane, lanes, epoch, repeat)`` yields the samples of lane ``lane`` of ``lanes``:
    lanes are disjoint and together hold every sample once; which samples a lane holds
    depends only on (the dataset's seed, ``epoch``, ``lane``, ``lanes``), their order on
    ``repeat`` too (a lane read again within an epoch). ``deal`` and ``lane_seed`` do
    this for sharded data. Items are ``LazySample``s, so the samples a resumed run skips
    are read but their images never decoded.
    """

    name: str = "stream"  # the dataset and split, for messages

    def __len__(self) -> int:
        raise NotImplementedError

    def stream(self, lane: int, lanes: int, epoch: int, repeat: int = 0) -> Iterator[LazySample]:
        raise NotImplementedError


class LazySample:
    """A sample whose image is decoded only when it is used: ``load()`` makes the ``Sample``.

    ``where`` names the sample in messages and counts (shard and member); rows sharing an image
    share it. A dataset should give it: it lets ``data.skip_bad`` leave an unusable sample out of
    a stream (``StreamSplit.leave_out``) and ``mmreg.badimages.Tally`` count each failing sample
    once; without it a sample is named by its row in the pre-training check, by its split alone
    while loading.
    """

    __slots__ = ("make", "where")

    def __init__(self, make: Callable[[], Sample], where: str | None = None) -> None:
        self.make, self.where = make, where

    def load(self) -> Sample:
        return self.make()


def deal(shards: Sequence[T], lane: int, lanes: int, seed: int, epoch: int) -> tuple[list[T], int]:
    """The shards lane ``lane`` of ``lanes`` reads this epoch, and ``every``: the lane keeps the
    samples at positions ``n`` with ``n % every == lane % every`` in what it reads.

    The shards are shuffled by (seed, epoch), the same for every lane, then dealt in turn
    (``webdataset.split_by_node`` then ``split_by_worker``, done at once); with fewer shards
    than lanes every lane reads every shard and keeps every ``lanes``-th sample.
    """
    order = [shards[i] for i in np.random.default_rng([seed, epoch]).permutation(len(shards))]
    if len(order) >= lanes:
        return order[lane::lanes], 1
    return order, lanes


def lane_seed(seed: int, epoch: int, lane: int, repeat: int) -> int:
    """The seed of one lane's shuffle buffer in one pass (``webdataset.shuffle``, ``datasets`` ``shuffle``)."""
    return int(np.random.default_rng([seed, epoch, lane, repeat]).integers(2**63))


class StreamSplit:
    """A streaming split as the model reads it: every image in RGB on ``background``, the samples
    ``leave_out`` names (``data.skip_bad``) left out."""

    def __init__(self, samples: IterableSamples, background: RGB = WHITE) -> None:
        self.samples, self.background = samples, background
        self.dropped: dict[str, int] = {}  # where -> rows left out

    def __len__(self) -> int:
        return len(self.samples) - sum(self.dropped.values())

    def __getitem__(self, index: int) -> Sample:
        raise DataError(f"{self.samples.name} is read as a stream and has no random access; use an indexed dataset here")

    def leave_out(self, rows: dict[str, int]) -> None:
        """Leave out the samples ``rows`` names (``LazySample.where`` -> its rows in the split)."""
        self.dropped.update(rows)

    def stream(self, lane: int, lanes: int, epoch: int, repeat: int = 0) -> Iterator[LazySample]:
        """``IterableSamples.stream`` without the samples left out."""
        items = self.samples.stream(lane, lanes, epoch, repeat)
        return (lazy for lazy in items if lazy.where not in self.dropped) if self.dropped else items

    def rgb(self, lazy: LazySample) -> Sample:
        """The sample with its image in RGB; raises ``UnreadableSample`` naming it where it cannot be
        made or decoded (what PIL and ``to_rgb`` raise, as ``mmreg.data.SplitView.sample`` catches)."""
        try:
            sample = lazy.load()
            return dataclasses.replace(sample, image=to_rgb(sample.image, self.background))
        except UnreadableSample:
            raise
        except (OSError, SyntaxError, ValueError, DataError) as exc:
            raise UnreadableSample(lazy.where or self.samples.name, " ".join(f"{type(exc).__name__}: {exc}".split())) from exc

    def tolerant(self, lazy: LazySample) -> Sample | Unreadable:
        """``rgb``, or the ``Unreadable`` that stands in a batch for a sample that fails to decode."""
        try:
            return self.rgb(lazy)
        except UnreadableSample as exc:
            return Unreadable(exc.where, exc.problem)


def check_stream(split: Any, dataset: str, name: str, mode: str, skip: bool) -> list[str]:
    """The check ``mode`` names (``mmreg.badimages.check_mode``) of a streamed split, before training.

    ``"full"`` reads the split once and decodes every image (once per sample, however many
    captions it has): an unusable one is refused with a DataError naming it (shard and member),
    or with ``skip`` left out of ``split`` and returned as "where: problem". ``"headers"``
    decodes nothing: what the dataset read to count the split is the whole check, and a sample
    that fails while loading is skipped and counted (``mmreg.badimages.Tally``). Anything but a
    ``StreamSplit`` is checked by ``mmreg.data.without_bad`` and returns ``[]`` here.
    """
    if not isinstance(split, StreamSplit) or mode != "full":
        return []
    problems: dict[str, str] = {}
    rows: Counter[str] = Counter()
    unnamed = False  # a sample the dataset gives no name, which no later read can recognise
    for n, lazy in enumerate(split.stream(0, 1, 0)):
        where = lazy.where or f"{split.samples.name} row {n}"
        rows[where] += 1
        if rows[where] > 1:
            continue  # another caption of an image already decoded
        try:
            split.rgb(lazy)
        except UnreadableSample as exc:
            problems[where] = exc.problem
            unnamed |= lazy.where is None
    found = [f"{where}: {problem}" for where, problem in problems.items()]
    if found and (not skip or unnamed):
        shown = "; ".join(found[:3]) + (f" (and {len(found) - 3} more)" if len(found) > 3 else "")
        way_out = "(data.skip_bad cannot leave out samples this stream does not name)" if unnamed else "or skip them with --set data.skip_bad=true"
        raise DataError(f"dataset '{dataset}' split '{name}': {len(found)} of {len(split)} samples unusable: {shown}; fix or remove them {way_out}")
    split.leave_out({w: rows[w] for w in problems})
    return found


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class TrainStream(IterableDataset):
    """One process's training batches of an epoch, already collated, ``batches`` of them; a sample
    that fails to decode is an ``Unreadable`` in its batch (``mmreg.data.Collate`` leaves it out).

    DataLoader workers take batches in turn (batch ``k`` from worker ``k % W``); with
    ``start`` batches already trained, worker ``w`` serves lane ``(start + w) % W``, so a
    resumed epoch continues exactly. Augmentation is seeded by (seed, epoch, rank, batch, row).
    """

    def __init__(
        self, split: StreamSplit, augmenters: Sequence[Augmenter], collate: Callable, batch_size: int, seed: int, rank: int, world: int
    ) -> None:
        self.split, self.augmenters, self.collate = split, list(augmenters), collate
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.batches = len(split) // (batch_size * world)
        self.epoch, self.start = 0, 0

    def _lane(self, lane: int, lanes: int) -> Iterator[LazySample]:
        """The lane's samples, read again in new orders when it runs out before the epoch does."""
        for repeat in itertools.count():
            empty = True
            for item in self.split.stream(lane, lanes, self.epoch, repeat):
                empty = False
                yield item
            if empty:
                raise DataError(
                    f"{self.split.samples.name}: lane {lane} of {lanes} (processes x workers) holds no sample; "
                    f"lower data.num_workers or add data"
                )

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker, workers = _worker()
        lane = (self.start + worker) % workers
        first = (self.start + worker) // workers  # the lane's batches trained before `start`
        last = math.ceil((self.batches - lane) / workers)  # the lane's batch count this epoch
        items = self._lane(self.rank * workers + lane, self.world * workers)
        for _ in itertools.islice(items, first * self.batch_size):  # skipped without decoding an image
            pass
        for j in range(first, last):
            k = j * workers + lane  # the batch's position in the process's epoch
            chunk = []
            for row, lazy in enumerate(itertools.islice(items, self.batch_size)):
                sample = self.split.tolerant(lazy)  # one that fails to decode is left out of the batch and counted
                if isinstance(sample, Sample):
                    rng = np.random.default_rng([self.seed, self.epoch, self.rank, k, row])
                    for augment in self.augmenters:
                        sample = augment(sample, rng)
                chunk.append(sample)
            yield self.collate(chunk)


class StreamEpochs:
    """What the trainer asks of its sampler, for a stream: batches per epoch, and where to start."""

    def __init__(self, stream: TrainStream) -> None:
        self.stream = stream

    def __len__(self) -> int:
        return self.stream.batches

    def set_epoch(self, epoch: int, start_at: int = 0) -> None:
        self.stream.epoch, self.stream.start = epoch, start_at


def stream_loader(
    augmented: Any, collate: Callable, batch_size: int, seed: int, *, rank: int, world: int, num_workers: int, pin_memory: bool
) -> tuple[StreamEpochs, DataLoader]:
    """The trainer's loader over ``augmented`` (``mmreg.data.AugmentedSplit`` of a ``StreamSplit``); under
    data parallelism a sample that fails to decode is replaced by a copy of another of its batch, as
    ``mmreg.data.train_loader`` does, so every process gives the same number of rows."""
    from .data import Collate

    if isinstance(collate, Collate):
        collate = collate.for_training(world)
    stream = TrainStream(augmented.samples, augmented.augmenters, collate, batch_size, seed, rank, world)
    loader = DataLoader(stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory)
    return StreamEpochs(stream), loader


class EvalStream(IterableDataset):
    """The whole split once, in batches (the last of each worker's may be short); each worker reads its own
    lane. A sample that fails to decode is an ``Unreadable`` in its batch, as in ``TrainStream``."""

    def __init__(self, split: StreamSplit, collate: Callable, batch_size: int) -> None:
        self.split, self.collate, self.batch_size = split, collate, batch_size

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker, workers = _worker()
        items = self.split.stream(worker, workers, 0)
        while chunk := [self.split.tolerant(lazy) for lazy in itertools.islice(items, self.batch_size)]:
            yield self.collate(chunk)


def is_stream(split: Any) -> bool:
    """Whether ``split`` (or the split an ``AugmentedSplit`` wraps) is read as a stream."""
    return isinstance(split, StreamSplit) or isinstance(getattr(split, "samples", None), StreamSplit)


def head(split: Any, n: int) -> list[Sample | Unreadable]:
    """The first ``n`` samples (at most the split's size) as the loaders give them: a ``StreamSplit``
    as evaluation reads it, an ``AugmentedSplit`` of one augmented as in the first batch of a run;
    one that fails to decode as its ``Unreadable``."""
    n = min(n, len(split))
    if isinstance(split, StreamSplit):
        return next(iter(EvalStream(split, list, n)))
    return next(iter(TrainStream(split.samples, split.augmenters, list, n, split.seed, 0, 1)))


def originals(split: StreamSplit) -> Iterator[Sample]:
    """Every sample once (those left out by ``data.skip_bad`` excepted), its image as decoded
    (before the RGB conversion), for reports."""
    return (lazy.load() for lazy in split.stream(0, 1, 0))


def eval_loader(split: StreamSplit, collate: Callable, batch_size: int, *, num_workers: int, pin_memory: bool) -> DataLoader:
    """Every sample of ``split`` exactly once, in every process (each evaluates the whole split)."""
    return DataLoader(EvalStream(split, collate, batch_size), batch_size=None, num_workers=num_workers, pin_memory=pin_memory)


__all__ = ["IterableSamples", "LazySample", "StreamSplit", "check_stream", "deal", "eval_loader", "head", "is_stream", "lane_seed", "originals", "stream_loader"]
