"""An image is an image: where a data set names no image (``Sample.image_id`` None), the core
recognises repeated images by their content, for every dataset plugin (DESIGN.md, "Tasks
own their results"), so the multi-caption protocol of Flickr30k and COCO (Karpathy splits;
``mmreg.metrics``) holds whatever the layout, e.g. a Hugging Face dataset with one row per
caption and the image's bytes in each.

A sample's content id is a 128-bit BLAKE2b digest (RFC 7693, ``hashlib.blake2b``) of its image as
the model reads it (``mmreg.images.to_rgb``, before augmentation): mode, size and decoded pixels.

- batches: ``mmreg.data.Collate`` gives each sample without an id its content id (``identified``),
  so a task's targets (retrieval's ``image_group``) group captions by image on every data path,
  streams included; the cost is one hash of the decoded pixels per such sample and batch;
- training and the counts (``val_images``): ``split_keys`` gives the image of each row of a split
  before training, decoding once (in a thread pool, ``mmreg.badimages.parallel_map``) the rows
  whose dataset gives none, for a split of up to ``data.full_check_max`` samples, the size the
  pre-training check decodes in full anyway. Larger splits keep the dataset's ids (a row without
  one is its own image); ``mmreg.sampling.split_groups`` says which splits training regroups.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from .errors import DataError

if TYPE_CHECKING:
    from PIL import Image

    from .components import Dataset, Sample
    from .streams import LazySample

CHUNK = 256  # stream rows decoded at once by the thread pool
CONTENT = "content:"  # the prefix of a content id, so it never equals an id a dataset gives
_KEYS: WeakKeyDictionary[Any, list[str | None]] = WeakKeyDictionary()  # per split view, computed once


def content_id(image: Image.Image) -> str:
    """``"content:"`` and the 128-bit BLAKE2b hex digest of ``image``'s mode, size and decoded pixel bytes."""
    digest = hashlib.blake2b(f"{image.mode} {image.size[0]}x{image.size[1]}\n".encode(), digest_size=16)
    digest.update(image.tobytes())
    return CONTENT + digest.hexdigest()


def identified(sample: Sample) -> Sample:
    """``sample`` with its ``image_id``, or its image's ``content_id`` where it has none."""
    if sample.image_id is not None:
        return sample
    return dataclasses.replace(sample, image_id=content_id(sample.image))


def check_text(value: object, field: str, image_id: str | None = None) -> None:
    """Refuse (DataError) a sample text (``Task.text``: a caption, a question) that is not a ``str``:
    a list of captions or a number reaching the tokenizer would be fed as its repr. ``image_id``
    (the dataset's, a path for file datasets) names the sample where the dataset gives one."""
    if isinstance(value, str):
        return
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    several = " (several captions of one image: give one sample per caption, sharing Sample.image_id)" if isinstance(value, (list, tuple)) else ""
    raise DataError(
        f"a sample's {field}{'' if image_id is None else f' (image {image_id})'} is {type(value).__name__} {shown}, not text{several}; "
        f"its dataset must give {field} as a str: set the dataset's {field} column or field to a text one, or fix the dataset plugin"
    )


def split_keys(dataset: Dataset, name: str, view: Sequence[Any], limit: int) -> list[str | None]:
    """The image of each row of split ``name`` as the model reads it (``view``: ``mmreg.data.SplitView``
    or ``mmreg.streams.StreamSplit``): the dataset's id, else the row's ``content_id``; None (the row's
    own image) where neither is known: a split of more than ``limit`` rows is not decoded for it.

    Computed once per view. An indexed split takes ids from ``Dataset.image_ids`` and decodes only
    the rows without one; a stream is read once (each image decoded once however many captions share
    it, ``LazySample.where``), ``CHUNK`` rows at a time. A row that fails to decode is its own image (the loaders skip it)."""
    from .badimages import UnreadableSample, parallel_map
    from .streams import StreamSplit

    cached = hasattr(view, "__weakref__")  # a list handed in is not kept
    if cached and view in _KEYS and len(view) <= limit:
        return _KEYS[view]
    if isinstance(view, StreamSplit):
        if len(view) > limit:
            return [None] * len(view)

        def read(lazy: LazySample) -> str | None:
            try:
                return identified(view.rgb(lazy)).image_id
            except UnreadableSample:
                return None

        known: dict[object, str | None] = {}  # per LazySample.where (rows sharing an image), else per row
        keys: list[str | None] = []
        items = view.stream(0, 1, 0)
        while chunk := list(itertools.islice(items, CHUNK)):
            tags = [lazy.where if lazy.where is not None else len(keys) + n for n, lazy in enumerate(chunk)]
            todo = {tag: lazy for tag, lazy in zip(tags, chunk, strict=True) if tag not in known}
            known.update(zip(todo, parallel_map(read, list(todo.values())), strict=True))
            keys += [known[tag] for tag in tags]
    else:
        ids = dataset.image_ids(name)
        keys = [ids[i] for i in getattr(view, "keep", range(len(ids)))]
        missing = [row for row, key in enumerate(keys) if key is None]
        if not missing or len(view) > limit:
            return keys

        def content(row: int) -> str | None:
            try:
                return content_id(view[row].image)
            except UnreadableSample:
                return None

        for row, key in zip(missing, parallel_map(content, missing), strict=True):
            keys[row] = key
    if cached:
        _KEYS[view] = keys
    return keys


def count_images(keys: Sequence[str | None]) -> int:
    """Distinct images among rows with these ``split_keys`` (a row keyed None is its own)."""
    return len({key for key in keys if key is not None}) + sum(key is None for key in keys)


__all__ = ["CONTENT", "check_text", "content_id", "count_images", "identified", "split_keys"]
