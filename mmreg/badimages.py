"""Unusable images at any scale: which pre-training check applies, headers read in parallel for
large splits, and the samples that still fail to decode during training, skipped and counted.

A split of up to ``data.full_check_max`` samples is fully decoded before training
(``Dataset.check``: file-and-row errors before any GPU time). A larger one gets
``Dataset.check_headers`` (file present, header parses; for file datasets read by
a thread pool), and a sample that fails to decode later is left out of its batch
(``Unreadable``), counted and named in the summary; more than
``data.max_unreadable`` of a split stops the run with a DataError.

A streamed split (``mmreg.streams``) gets the same choice from ``check_mode``, carried out by
``mmreg.streams.check_stream``: every image decoded before training, or none (what its dataset
read to count it is the whole check), with the same skip, count and cap while loading.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import DataError

if TYPE_CHECKING:
    from .components import Dataset

T = TypeVar("T")
SHOWN = 5  # names kept in the summary per split


def check_mode(size: int, full_check_max: int) -> str:
    """``"full"`` (every image decoded before training) up to ``full_check_max`` samples, else ``"headers"``."""
    return "full" if size <= full_check_max else "headers"


def find_bad(dataset: Dataset, split: str, mode: str) -> list[tuple[int, str]]:
    """(index, problem) of the split's unusable samples found by the check ``mode`` names."""
    return dataset.check(split) if mode == "full" else dataset.check_headers(split)


def describe_check(split: str, samples: Any, mode: str, full_check_max: int, max_unreadable: float) -> str:
    """One progress line saying which check ran on a split (``samples``: ``Dataset.split``'s result, a
    sequence or a stream) and what happens to images that fail later."""
    from .streams import IterableSamples

    size, stream = len(samples), isinstance(samples, IterableSamples)
    if mode == "full":
        return f"{split}: {size} samples' images fully decoded before training (up to data.full_check_max={full_check_max})"
    read = "streamed: its samples counted before training, no image decoded" if stream else "headers read before training"
    return (
        f"{split}: {size} samples, more than data.full_check_max={full_check_max}: {read}; "
        f"images that fail to decode while loading are skipped and counted (at most data.max_unreadable={max_unreadable:g})"
    )


def header_problem(path: Path) -> str | None:
    """Why the image file at ``path`` cannot be used, from its header alone, or None.

    ``PIL.Image.open`` identifies the format and reads the size without decoding the
    pixels, so a missing, empty or non-image file is found in about a millisecond;
    a file truncated after its header is found only when decoded.
    """
    from PIL import Image

    if not path.is_file():
        return f"image {path} not found"
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - parsed from the header
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError... for bad headers
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return f"image {path} is not a readable image ({reason})"
    return None


def parallel_map(fn: Callable[[T], Any], items: Sequence[T], threads: int | None = None) -> list[Any]:
    """``[fn(x) for x in items]`` in a thread pool (file reads release the GIL), in order."""
    threads = threads or min(32, 4 * len(os.sched_getaffinity(0)))
    if len(items) < 2 * threads:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, items, chunksize=256))


@dataclass(frozen=True)
class Unreadable:
    """Stands in a batch for a sample that failed to decode: ``where`` names it (file, row), ``problem`` says why."""

    where: str
    problem: str


class UnreadableSample(DataError):
    """A sample failed to be made or decoded; loaders catch it and skip the sample (``Tolerant``)."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where, self.problem = where, problem


class Tolerant:
    """A map-style dataset whose samples that fail to decode come back as ``Unreadable``; ``Collate``
    leaves them out of the batch and names them in it."""

    def __init__(self, samples: Any) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.samples[key]
        except UnreadableSample as exc:
            return Unreadable(exc.where, exc.problem)


@dataclass
class Tally:
    """The distinct samples of one split that failed to decode while loading, and the cap on them."""

    split: str
    size: int
    max_share: float
    problems: dict[str, str] = field(default_factory=dict)

    def record(self, failed: Iterable[Unreadable]) -> None:
        """Count ``failed``; raise DataError once more than ``max_share`` of the split has failed."""
        for item in failed:
            self.problems.setdefault(item.where, item.problem)
        allowed = int(self.max_share * self.size)
        if len(self.problems) > allowed:
            shown = "; ".join(f"{w}: {p}" for w, p in list(self.problems.items())[:2])
            raise DataError(
                f"{len(self.problems)} of {self.size} samples of split '{self.split}' failed to decode while loading, "
                f"more than data.max_unreadable={self.max_share:g} allows ({allowed}): {shown}; "
                f"fix or remove them, or raise data.max_unreadable"
            )

    def summary(self) -> dict[str, Any]:
        """``{"count": N, "names": [the first few "where: problem"]}`` for summary.json."""
        return {"count": len(self.problems), "names": [f"{w}: {p}" for w, p in list(self.problems.items())[:SHOWN]]}


__all__ = ["Tally", "Tolerant", "Unreadable", "UnreadableSample", "check_mode", "header_problem", "parallel_map"]
