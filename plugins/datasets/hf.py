"""`hf`: a Hugging Face dataset as image-caption samples: a ``save_to_disk`` directory, local data
files any ``datasets`` builder reads, or a hub id already in the local cache.

Arrow and parquet data read without streaming are memory-mapped (``datasets`` keeps
them on disk and pages rows in), so a split larger than memory still trains;
``streaming=true`` reads rows in order instead, for data that should not be
converted to Arrow first.

A caption column holding lists (Flickr30k and COCO on the hub: five captions a row) gives one
sample per caption, the captions of a row sharing its ``image_id`` (the id column, else the image
path, else the row). Rows naming no image by id or path are grouped by content by the core
(``mmreg.identity``): one row per caption with the image's bytes in each is one image.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from mmreg.components import Dataset, Sample, Samples
from mmreg.errors import ConfigError, DataError
from mmreg.images import open_image
from mmreg.streams import IterableSamples, LazySample, lane_seed
from mmreg_plugins.datasets.files import hold_out

BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}
VAL_NAMES = ("validation", "val", "valid", "dev", "test")


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise ConfigError("dataset 'hf' needs the datasets package; pip install 'mmreg[hf]'") from None
    datasets.disable_progress_bars()  # stderr carries mmreg's own progress and one-line errors
    return datasets


def load(path: str, builder: str | None, config_name: str | None, streaming: bool) -> Any:
    """A ``DatasetDict`` (``IterableDatasetDict`` with streaming) for ``path``: ``load_from_disk`` for a
    ``save_to_disk`` directory, else ``load_dataset`` (local files, or a hub id from the local cache)."""
    datasets = _datasets()
    local = Path(path)
    if local.is_dir() and ((local / "dataset_dict.json").is_file() or (local / "state.json").is_file()):
        loaded = datasets.load_from_disk(str(local))
        if isinstance(loaded, datasets.Dataset):
            loaded = datasets.DatasetDict({"train": loaded})
        return datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in loaded.items()}) if streaming else loaded
    if local.is_file():
        builder = builder or BUILDERS.get(local.suffix.lower())
        if builder is None:
            raise ConfigError(f"cannot tell the builder of {path} from its suffix; set dataset.builder (parquet, arrow, csv, json)")
        return datasets.load_dataset(builder, data_files=str(local), streaming=streaming)
    if local.is_dir():
        return datasets.load_dataset(builder or "imagefolder", data_dir=str(local), streaming=streaming)
    try:
        return datasets.load_dataset(path, config_name, streaming=streaming)
    except (FileNotFoundError, ConnectionError, ValueError) as exc:
        offline = " (HF_DATASETS_OFFLINE is set)" if datasets.config.HF_HUB_OFFLINE else ""
        reason = " ".join(str(exc).split())[:200]
        raise DataError(
            f"dataset.path '{path}' is neither a local dataset nor a hub dataset in the local cache{offline}: {reason}; "
            f"give a save_to_disk directory or a data file, or download the dataset first"
        ) from None


def captions_of(value: Any, column: str, where: str) -> list[str]:
    """The captions a caption cell holds: a text, or each text of a list (several captions of the row's
    image); DataError naming ``where`` for anything else, which would reach the model as its repr."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(c, str) for c in value):
        return list(value)
    if isinstance(value, list):
        kind = "a list holding something other than text" if value else "an empty list"
    else:
        kind = "no value" if value is None else type(value).__name__
    raise DataError(f"{where}: caption_column '{column}' holds {kind}, not a text or a list of texts; set dataset.caption_column to a text column")


def check_columns(features: Mapping[str, Any], columns: Mapping[str, str | None], split: str) -> None:
    for setting, column in columns.items():
        if column is not None and column not in features:
            raise DataError(
                f"dataset 'hf' split '{split}' has no column '{column}' (columns: {', '.join(features)}); "
                f"set dataset.{setting} to one of them"
            )


def image_keys(table: Any, column: str) -> list[str]:
    """Each row's image as ``column`` names it, read without decoding: the id or path it holds, or a
    BLAKE2b digest of the encoded bytes it holds (an ``Image`` feature read with ``decode=False``:
    its bytes, else its path), so rows repeating an image's bytes are one image."""
    keys = []
    for value in HfDataset._column(table, column):
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if isinstance(value, (bytes, bytearray)):
            value = "bytes:" + hashlib.blake2b(value, digest_size=16).hexdigest()
        keys.append(str(value))
    return keys


def held_out(table: Any, keys: list[str], fraction: float, seed: int) -> dict[str, Any]:
    """``{"train", "val"}`` tables: a seeded ``fraction`` of the images (``keys``, one per row) with
    every row of each, as the `files` dataset holds out (``hold_out``); at least one image on each side."""
    images = list(dict.fromkeys(keys))
    held = {images[i] for i in hold_out(len(images), fraction, np.random.default_rng(seed))}
    return {
        "train": table.select([i for i, key in enumerate(keys) if key not in held]),
        "val": table.select([i for i, key in enumerate(keys) if key in held]),
    }


class Rows:
    """Turns a row and one of its captions into a ``Sample``: images through ``mmreg.images.open_image``
    (EXIF orientation applied), paths relative to the data file, labels as class numbers."""

    def __init__(self, image: str, label: str | None, ids: str | None, base: Path, classes: dict[Any, int] | None) -> None:
        self.image, self.label, self.ids, self.base, self.classes = image, label, ids, base, classes

    def sample(self, row: Mapping[str, Any], caption: str, row_id: str | None = None) -> Sample:
        """``row_id`` names the row's image where neither the id column nor a path does (a row of several captions)."""
        value, path = row[self.image], None  # path: set where the column holds paths, naming the image
        if isinstance(value, dict):  # an Image feature read with decode=False: {"bytes", "path"}
            source: Any = io.BytesIO(value["bytes"]) if value.get("bytes") else value.get("path")
        elif isinstance(value, (bytes, bytearray)):
            source = io.BytesIO(value)
        elif isinstance(value, str):
            source = path = str(self.base / value)
        else:
            raise DataError(f"dataset 'hf' column '{self.image}' holds {type(value).__name__}, not an image; set dataset.image_column")
        label = None
        if self.label is not None:
            label = row[self.label] if self.classes is None else self.classes[row[self.label]]
        image_id = str(row[self.ids]) if self.ids is not None else path if path is not None else row_id
        return Sample(open_image(source), caption, label, image_id=image_id)


class HfSplit(Samples):
    """A (memory-mapped) ``datasets.Dataset``, one sample per caption; a row's image is decoded on access.

    ``owners``: the table row of each caption where the caption column holds lists, else None (a row each)."""

    def __init__(self, table: Any, rows: Rows, captions: list[str], owners: list[int] | None) -> None:
        self.table, self.rows, self.captions, self.owners = table, rows, captions, owners

    def __len__(self) -> int:
        return len(self.captions)

    def sample(self, index: int) -> Sample:
        if self.owners is None:
            return self.rows.sample(self.table[index], self.captions[index])
        owner = self.owners[index]
        return self.rows.sample(self.table[owner], self.captions[index], f"row {owner}")


class HfStream(IterableSamples):
    """A ``datasets.IterableDataset`` read in order; lanes are dealt by ``datasets.distributed.split_dataset_by_node``
    (whole shards when their count divides evenly, else every lanes-th row), after a shuffle seeded by (seed, epoch)."""

    def __init__(self, name: str, table: Any, rows: Rows, caption: str, size: int, seed: int, buffer: int) -> None:
        self.name, self.table, self.rows, self.caption, self.size, self.seed, self.buffer = name, table, rows, caption, size, seed, buffer

    def __len__(self) -> int:
        return self.size

    def stream(self, lane: int, lanes: int, epoch: int, repeat: int = 0) -> Iterator[LazySample]:
        from datasets.distributed import split_dataset_by_node

        table = self.table
        if self.buffer > 1:  # the same seed in every lane: the shard order must agree for the lanes to be disjoint
            table = table.shuffle(seed=lane_seed(self.seed, epoch, 0, repeat) % 2**32, buffer_size=self.buffer)
        part = split_dataset_by_node(table, rank=lane, world_size=lanes)
        for batch in part.iter(batch_size=64):  # .iter, not iter(): no second split by DataLoader worker
            for values in zip(*batch.values(), strict=True):
                row = dict(zip(batch, values, strict=True))
                for caption in captions_of(row[self.caption], self.caption, self.name):
                    yield LazySample(partial(self.rows.sample, row, caption))


class HfDataset(Dataset):
    """Image-caption samples (optionally labels) from a Hugging Face dataset; see ``HfParams``."""

    fields = frozenset({"image", "caption", "label", "image_id"})

    def __init__(self, *, path: str, builder: str | None, config_name: str | None, image_column: str, caption_column: str,
                 label_column: str | None, id_column: str | None, train_split: str, val_split: str | None,
                 val_fraction: float, streaming: bool, shuffle_buffer: int, seed: int) -> None:  # fmt: skip
        datasets = _datasets()
        loaded = load(path, builder, config_name, streaming)
        if train_split not in loaded:
            raise DataError(f"dataset 'hf' at {path} has no split '{train_split}' (splits: {', '.join(loaded)}); set dataset.train_split")
        if val_split is not None and val_split not in loaded:
            raise DataError(f"dataset 'hf' at {path} has no split '{val_split}' (splits: {', '.join(loaded)}); set dataset.val_split")
        val_split = val_split or next((name for name in VAL_NAMES if name in loaded and name != train_split), None)
        tables = {"train": loaded[train_split]}
        if val_split is not None:
            tables["val"] = loaded[val_split]
        elif streaming:
            raise ConfigError(f"dataset 'hf' at {path} has no validation split to stream; set dataset.val_split, or streaming=false to hold out a fraction")
        columns = {"image_column": image_column, "caption_column": caption_column, "label_column": label_column, "id_column": id_column}
        for name, table in tables.items():
            check_columns(table.features or {}, columns, name)
        features = tables["train"].features
        if isinstance(features[image_column], datasets.Image):
            tables = {k: t.cast_column(image_column, datasets.Image(decode=False)) for k, t in tables.items()}
        if "val" not in tables:  # hold out whole images, so no caption of a validation image is trained on
            tables = held_out(tables["train"], image_keys(tables["train"], id_column or image_column), val_fraction, seed)
        paths = isinstance(features[image_column], datasets.Value) and features[image_column].dtype in ("string", "large_string")
        # the column naming each row's image (an id, or a path made relative to base as Rows does)
        self._ids, self._paths = id_column or (image_column if paths else None), id_column is None and paths
        self._base = Path(path).parent if Path(path).is_file() else Path(path)
        self._captions: dict[str, list[str]] = {}
        self._owners: dict[str, list[int] | None] = {}  # per split, each caption's table row where the column holds lists
        for k, t in tables.items():
            texts: list[str] = []
            owners: list[int] = []
            listed = False
            for i, value in enumerate(self._column(t, caption_column)):
                found = captions_of(value, caption_column, f"dataset 'hf' split '{k}' row {i}")
                listed |= isinstance(value, list)
                texts += found
                owners += [i] * len(found)
            self._captions[k], self._owners[k] = texts, owners if listed else None
        grouped = self._ids is not None or (not streaming and any(o is not None for o in self._owners.values()))
        self.fields = frozenset({"image", "caption"} | ({"label"} if label_column else set()) | ({"image_id"} if grouped else set()))
        ids = None
        if label_column is not None:
            if isinstance(features[label_column], datasets.ClassLabel):
                self.classes = list(features[label_column].names)
            else:
                values = {v for t in tables.values() for v in self._column(t, label_column)}
                self.classes = sorted(str(v) for v in values)
                ids = {v: self.classes.index(str(v)) for v in values}
        local = Path(path)
        rows = Rows(image_column, label_column, id_column, local.parent if local.is_file() else local, ids)
        if streaming:
            self._splits: dict[str, Any] = {
                k: HfStream(f"dataset 'hf' split '{k}'", t, rows, caption_column, len(self._captions[k]), seed, shuffle_buffer if k == "train" else 0)
                for k, t in tables.items()
            }
        else:
            self._splits = {k: HfSplit(t, rows, self._captions[k], self._owners[k]) for k, t in tables.items()}

    @staticmethod
    def _column(table: Any, column: str) -> Iterator[Any]:
        """One column's values, read without the others (no image decoded)."""
        for batch in table.select_columns([column]).iter(batch_size=1000):
            yield from batch[column]

    def split(self, name: str) -> HfSplit | HfStream:
        if name not in self._splits:
            raise DataError(f"dataset 'hf' has no split '{name}' (splits: train, val)")
        return self._splits[name]

    def check(self, name: str) -> list[tuple[int, str]]:
        if isinstance(self.split(name), HfStream):
            return []  # read as a stream: images are checked as they are read
        return super().check(name)

    def image_ids(self, name: str) -> list[str | None]:
        """Each sample's image id read from its column alone (no image decoded): the id column, else the
        image path, else the row where the caption column holds lists, as ``Sample.image_id`` gives it;
        None where none names the image (the core then knows it by content, ``mmreg.identity``)."""
        split = self.split(name)
        if isinstance(split, HfStream) or (self._ids is None and split.owners is None):
            return [None] * len(split)
        if self._ids is None:
            return [f"row {owner}" for owner in split.owners]  # type: ignore[union-attr]
        values = [str(self._base / v) if self._paths else str(v) for v in self._column(split.table, self._ids)]
        return values if split.owners is None else [values[owner] for owner in split.owners]

    def texts(self, name: str, field: str = "caption") -> list[str]:
        if field != "caption":
            raise DataError(f"dataset 'hf' has no '{field}' texts, only captions")
        self.split(name)
        return list(self._captions[name])

