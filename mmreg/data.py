"""From a dataset's samples to model batches: augmentation, preprocessing, loaders."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from .badimages import Tally, Tolerant, Unreadable, UnreadableSample, find_bad
from .components import Augmenter, Dataset, Encoder, Sample, Samples, Task
from .errors import DataError
from .identity import check_text, identified
from .images import RGB, WHITE, to_rgb
from .sampling import EpochBatches
from .streams import IterableSamples, StreamSplit, eval_loader


class AugmentedSplit(torch.utils.data.Dataset):
    """Applies the augmenters to the training split, seeded by (seed, epoch, index)."""

    def __init__(self, samples: Sequence[Sample], augmenters: Sequence[Augmenter], seed: int) -> None:
        self.samples, self.augmenters, self.seed, self.epoch = samples, list(augmenters), seed, 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        """``key`` is an index (at ``self.epoch``) or ``(epoch, index)`` from ``EpochTagged``, which
        carries the epoch to persistent DataLoader workers, whose copy of ``epoch`` never changes."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        sample = self.samples[index]
        if not self.augmenters:
            return sample
        rng = np.random.default_rng([self.seed, epoch, index])
        for augment in self.augmenters:
            sample = augment(sample, rng)
        return sample


IGNORE = -100  # a target outside the training vocabulary: never right, never trained on


UNREADABLE = "unreadable"  # the batch key naming samples left out because they failed to decode


class Collate:
    """Preprocesses and tokenizes a whole batch at once, as the encoder expects, and adds
    the task's targets (``Task.targets``); ``task.text`` names the sample field fed as text.

    Runs in the DataLoader workers. Pixels stay uint8 where the encoder gives them
    (``Encoder.pixel_inputs_uint8``; normalised on the device by ``mmreg.pixels``).
    Samples that failed to decode (``mmreg.badimages.Unreadable``) are left out and
    listed under ``"unreadable"``, which the loader (``Batches``) takes out and counts.
    A sample without ``image_id`` gets its image's content id (``mmreg.identity.identified``), so
    the task's targets group captions of one picture on every data path; a text that is not a
    ``str`` (a list of captions) is refused (``mmreg.identity.check_text``), never fed as its repr.
    """

    def __init__(self, encoder: Encoder, task: Task, keep_size: bool = False, identify: bool = True) -> None:
        # keep_size: a failed sample's place is taken by a copy of the batch's first good one, because
        # under data parallelism every process must contribute the same number of rows (all_gather).
        # identify: content ids for evaluation's grouping; training groups by its sampler instead, so
        # its loaders leave them out (no image hashed on the training path).
        self.encoder, self.task, self.keep_size, self.identify = encoder, task, keep_size, identify

    def for_training(self, world: int) -> Collate:
        """This collate as the training loaders use it: no content ids, and failed samples replaced
        under data parallelism (``keep_size``)."""
        return Collate(self.encoder, self.task, keep_size=world > 1, identify=False)

    def pixels(self, images: Sequence[Any]) -> dict[str, torch.Tensor]:
        raw = self.encoder.pixel_inputs_uint8(images)
        return raw if raw is not None else self.encoder.pixel_inputs(images)

    def __call__(self, items: Sequence[Sample | Unreadable]) -> dict[str, Any]:
        samples = [s for s in items if not isinstance(s, Unreadable)]
        failed = [s for s in items if isinstance(s, Unreadable)]
        if not samples:
            raise DataError(f"every sample of a batch failed to decode: {failed[0].where}: {failed[0].problem}; fix or remove them")
        if self.keep_size:
            samples += [samples[0]] * len(failed)
        texts = [getattr(s, self.task.text) for s in samples]
        for sample, text in zip(samples, texts, strict=True):
            check_text(text, self.task.text, sample.image_id)
        if self.identify:  # an image the dataset names no id for is known by its content
            samples = [identified(s) for s in samples]
        batch: dict[str, Any] = self.pixels([s.image for s in samples])
        if samples[0].views is not None:
            for i in (0, 1):
                batch[f"view{i}_pixel_values"] = self.pixels([s.views[i] for s in samples])["pixel_values"]  # type: ignore[index]
        batch.update(self.encoder.tokenize(texts))
        batch.update(self.task.targets(samples))
        if failed:
            batch[UNREADABLE] = failed
        return batch


class SplitView(Samples):
    """A split as the model reads it: unusable samples (``data.skip_bad``) left out, and every
    image in RGB as a viewer shows it (``mmreg.images.to_rgb`` onto ``background``)."""

    def __init__(self, samples: Sequence[Sample], drop: set[int], background: RGB = WHITE) -> None:
        self.samples, self.keep, self.background = samples, [i for i in range(len(samples)) if i not in drop], background

    def __len__(self) -> int:
        return len(self.keep)

    def where(self, index: int) -> str:
        name = getattr(self.samples, "where", None)
        return name(self.keep[index]) if name is not None else f"sample {self.keep[index]}"

    def sample(self, index: int) -> Sample:
        """Raises ``UnreadableSample`` (a DataError) naming the sample where it cannot be made or decoded."""
        try:
            sample = self.samples[self.keep[index]]
            return dataclasses.replace(sample, image=to_rgb(sample.image, self.background))
        except (OSError, SyntaxError, ValueError, DataError) as exc:  # what PIL and to_rgb raise for bad images
            raise UnreadableSample(self.where(index), " ".join(f"{type(exc).__name__}: {exc}".split())) from exc


def without_bad(
    dataset: Dataset, name: str, split: str, skip_bad: bool, background: RGB = WHITE, mode: str = "full"
) -> tuple[SplitView, list[str]]:
    """The split, checked before training by the check ``mode`` names (``mmreg.badimages``:
    ``"full"`` decodes every image, ``"headers"`` reads headers only), and the problems found:
    unusable samples are an error, or (``skip_bad``) left out and returned as "where: problem" lines."""
    samples = dataset.split(split)
    if isinstance(samples, IterableSamples):  # read as a stream: its samples are checked as they are read
        return StreamSplit(samples, background), []  # type: ignore[return-value]
    bad = find_bad(dataset, split, mode)
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


class EpochTagged(Sampler[list[tuple[int, int]]]):
    """``EpochBatches`` with each index tagged with its epoch, so persistent workers augment
    each sample as the epoch's (seed, epoch, index) says (see ``AugmentedSplit``)."""

    def __init__(self, batches: EpochBatches) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.batches.epoch
        for batch in self.batches:
            yield [(epoch, index) for index in batch]


class Batches:
    """A DataLoader's batches with the samples that failed to decode taken out and counted
    (``tally``: ``mmreg.badimages.Tally``, which stops the run past ``data.max_unreadable``)."""

    def __init__(self, loader: DataLoader, tally: Tally) -> None:
        self.loader, self.tally = loader, tally

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self.loader:
            failed = batch.pop(UNREADABLE, None) if isinstance(batch, dict) else None
            if failed:
                self.tally.record(failed)
            yield batch


PREFETCH = 4  # batches each worker keeps ready
MAX_WORKERS = 8  # past this, decoding rarely limits one GPU and each worker costs memory


def resolve_workers(setting: int | str, device: torch.device, processes: int = 1, cpus: int | None = None) -> int:
    """The DataLoader worker processes ``data.num_workers`` asks for: a number as given;
    ``"auto"`` none on the CPU (training there already uses every core, and extra processes
    would slow it), else the CPUs this process may use (``os.sched_getaffinity``) shared
    among the ``processes`` data-parallel processes of the machine, one left for the
    training process itself, at least 1 and at most ``MAX_WORKERS``."""
    if setting != "auto":
        return int(setting)
    if device.type == "cpu":
        return 0
    cpus = cpus if cpus is not None else len(os.sched_getaffinity(0))
    return max(1, min(MAX_WORKERS, cpus // max(1, processes) - 1))


def local_processes() -> int:
    """Data-parallel processes on this machine, as torchrun and accelerate launch say (1 alone)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def loader_options(num_workers: int, pin_memory: bool) -> dict[str, Any]:
    """DataLoader settings for ``num_workers`` processes: kept alive across epochs
    (``persistent_workers``), each preparing ``PREFETCH`` batches ahead; nothing extra for 0."""
    if num_workers == 0:
        return {"num_workers": 0, "pin_memory": pin_memory}
    return {"num_workers": num_workers, "pin_memory": pin_memory, "persistent_workers": True, "prefetch_factor": PREFETCH}




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
    split: str = "val",
    max_unreadable: float = 0.01,
) -> Batches:
    """Batches built by ``collate`` (tokenised per batch), in ``num_workers`` processes.

    Order depends only on ``seed``, and augmentation is seeded per sample, so the
    number of workers never changes what a run sees. Samples of ``split`` that fail
    to decode are skipped and counted, at most ``max_unreadable`` of it.
    """
    if isinstance(samples, StreamSplit):  # each worker reads its own shards (mmreg.streams)
        stream = eval_loader(samples, collate, batch_size, num_workers=num_workers, pin_memory=pin_memory)
        return Batches(stream, Tally(split, len(samples), max_unreadable))
    loader = DataLoader(
        Tolerant(samples),  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
        **loader_options(num_workers, pin_memory),
    )
    return Batches(loader, Tally(split, len(samples), max_unreadable))  # type: ignore[arg-type]


def train_loader(
    samples: Sequence[Any], batches: EpochBatches, collate: Collate, *, seed: int, num_workers: int, pin_memory: bool, max_unreadable: float
) -> Batches:
    """The training split's loader: ``batches`` (order by (seed, epoch), sharded per process),
    tagged with their epoch for the workers where ``samples`` augments (``AugmentedSplit``);
    samples that fail to decode skipped and counted (under data parallelism replaced by a copy of
    another sample of the batch, so every process gives the same number of rows)."""
    if isinstance(collate, Collate):
        collate = collate.for_training(batches.world)
    loader = DataLoader(
        Tolerant(samples),  # type: ignore[arg-type]
        batch_sampler=EpochTagged(batches) if isinstance(samples, AugmentedSplit) else batches,
        collate_fn=collate,
        # each new iterator draws a worker seed; from the global RNG it would shift dropout after a resume
        generator=torch.Generator().manual_seed(seed),
        **loader_options(num_workers, pin_memory),
    )
    return Batches(loader, Tally("train", len(samples), max_unreadable))
