"""`files`: image-caption pairs listed in a CSV or JSON Lines file, as transformers' run_clip.py reads them.

Rows naming the same image file (or sharing ``image_id_column``) are captions of one image
(Flickr30k and COCO give five): ``Sample.image_id`` says so, so training takes one caption per
image per epoch and retrieval is evaluated by the standard protocol (mmreg.metrics). In JSON
Lines a caption may also be a list of texts: one sample per caption, all of the line's image."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mmreg.components import Dataset, Sample, Samples
from mmreg.errors import ConfigError, DataError
from mmreg.images import load_image, open_image

SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


@dataclass(frozen=True)
class Record:
    """One sample before its image is read; ``where`` names its source in messages ("a.csv row 3")."""

    image: Path
    caption: str
    label: int | None = None
    where: str | None = None
    image_id: str | None = None  # captions of one image share it (Sample.image_id)

    def problem(self) -> str | None:
        """Why this sample's image cannot be used, or None.

        Decodes the whole image as training will (``mmreg.images.load_image``):
        ``Image.open`` reads only the header, so a truncated or corrupt file, or
        a mode with no RGB rendering, would otherwise pass here and fail mid-training.
        """
        prefix = f"{self.where}: " if self.where else ""
        if not self.image.is_file():
            return f"{prefix}image {self.image} not found"
        try:
            load_image(self.image)
        except DataError as exc:  # decoded, but in a mode that has no RGB rendering
            return f"{prefix}image {self.image}: {exc}"
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for bad files
            reason = " ".join(str(exc).split()) or type(exc).__name__
            return f"{prefix}image {self.image} is not a readable image ({reason})"
        return None


class ImageSplit(Samples):
    """Samples whose images are read from disk on access, so a split holds only paths and texts."""

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def sample(self, index: int) -> Sample:
        record = self.records[index]
        return Sample(open_image(record.image), record.caption, record.label, image_id=record.image_id)

    def where(self, index: int) -> str:
        record = self.records[index]
        return f"{record.where}: image {record.image}" if record.where else f"image {record.image}"

    def check(self) -> list[tuple[int, str]]:
        return [(i, problem) for i, record in enumerate(self.records) if (problem := record.problem()) is not None]

    def check_headers(self) -> list[tuple[int, str]]:
        """Each image's header only, read by a thread pool (``mmreg.badimages.header_problem``)."""
        from mmreg.badimages import header_problem, parallel_map

        found = parallel_map(header_problem, [record.image for record in self.records])
        return [(i, self._named(i, problem)) for i, problem in enumerate(found) if problem is not None]

    def _named(self, index: int, problem: str) -> str:
        where = self.records[index].where
        return f"{where}: {problem}" if where else problem


def hold_out(count: int, fraction: float, rng: np.random.Generator) -> list[int]:
    """Positions (sorted) of a shuffled ``fraction`` of ``count`` items, keeping at least one on each side."""
    if count < 2:
        return []
    size = min(max(round(count * fraction), 1), count - 1)
    return sorted(int(i) for i in rng.permutation(count)[:size])


class DiskDataset(Dataset):
    """A dataset of ``ImageSplit``s, which a subclass builds into ``_splits``; ``dataset_name`` is its registered name."""

    dataset_name: ClassVar[str]
    _splits: dict[str, ImageSplit]

    def split(self, name: str) -> ImageSplit:
        if name not in self._splits:
            raise DataError(f"dataset '{self.dataset_name}' has no split '{name}' (splits: {', '.join(self._splits)})")
        return self._splits[name]

    def check(self, name: str) -> list[tuple[int, str]]:
        return self.split(name).check()

    def check_headers(self, name: str) -> list[tuple[int, str]]:
        return self.split(name).check_headers()

    def texts(self, name: str, field: str = "caption") -> list[str]:
        """Captions without opening a single image."""
        if field != "caption":
            raise DataError(f"dataset '{self.dataset_name}' has no '{field}' texts, only captions")
        return [r.caption for r in self.split(name).records]

    def image_ids(self, name: str) -> list[str | None]:
        """Each row's image id without opening a single image."""
        return [r.image_id for r in self.split(name).records]


class FileSplits(DiskDataset):
    """Image-caption pairs (and optionally labels) from a CSV or JSON Lines file, images read on access."""

    dataset_name = "files"

    # Declared for the early compatibility check; an instance narrows it to what label_column gives.
    fields = frozenset({"image", "caption", "label", "image_id"})

    def __init__(
        self,
        *,
        train: str,
        val: str | None,
        val_fraction: float,
        image_column: str,
        caption_column: str,
        label_column: str | None,
        format: str,
        seed: int,
        image_id_column: str | None = None,
    ) -> None:
        columns = (image_column, caption_column, label_column, image_id_column)
        rows = {"train": read_rows(Path(train), format, columns, "train")}
        if val is not None:
            rows["val"] = read_rows(Path(val), format, columns, "val")
        else:  # hold out whole images, so no caption of a validation image is trained on
            images = list(dict.fromkeys(r.image_id for r in rows["train"]))
            held = {images[i] for i in hold_out(len(images), val_fraction, np.random.default_rng(seed))}
            rows["val"] = [r for r in rows["train"] if r.image_id in held]
            rows["train"] = [r for r in rows["train"] if r.image_id not in held]
        self.fields = frozenset({"image", "caption", "image_id"} | ({"label"} if label_column else set()))
        labels = sorted({r.label for split in rows.values() for r in split if r.label is not None})
        self.classes = labels if label_column else None
        ids = {name: i for i, name in enumerate(labels)}
        self._splits = {
            name: ImageSplit([Record(r.image, r.caption, None if r.label is None else ids[r.label], r.where, r.image_id) for r in split])
            for name, split in rows.items()
        }


@dataclass(frozen=True)
class Row:
    """A validated row; ``label`` is still the label's text."""

    image: Path
    caption: str
    label: str | None
    where: str
    image_id: str  # image_id_column's value, else the image's path


def read_rows(path: Path, format: str, columns: tuple[str, str, str | None, str | None], setting: str) -> list[Row]:
    """Every row of ``path`` (given as dataset.``setting``), refusing at once, with file and row,
    anything that would fail later (an image id shared by rows naming different images included)."""
    if not path.is_file():
        raise DataError(f"dataset file {path} not found; set dataset.{setting} to a CSV or JSON Lines file")
    if format == "auto":
        if path.suffix.lower() not in SUFFIXES:
            raise ConfigError(f"cannot tell the format of {path} from its suffix; set dataset.format to csv or jsonl")
        format = SUFFIXES[path.suffix.lower()]
    records = _csv_records(path) if format == "csv" else _jsonl_records(path)
    rows = [row for where, record in records for row in _rows(path, where, record, columns)]
    if not rows:
        raise DataError(f"dataset file {path} has no rows; add one row per image, with its path and its caption")
    first: dict[str, Row] = {}
    for row in rows:
        seen = first.setdefault(row.image_id, row)
        if seen.image != row.image and seen.image.resolve() != row.image.resolve():  # resolved only when spelled differently
            raise DataError(
                f"{row.where}: image id {row.image_id} is also {seen.where}'s, which names another image "
                f"({seen.image.name}, here {row.image.name}); give each image one id"
            )
    return rows


def _csv_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) for each CSV data row; the header names the columns."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, restval="")  # a short row's missing cells are empty, as in a spreadsheet
        try:
            for number, record in enumerate(reader, start=1):
                yield f"{path} row {number}", record
        except UnicodeDecodeError as exc:  # raised per buffered chunk: find the line by decoding each one
            line = next(i for i, raw in enumerate(path.read_bytes().splitlines(), start=1) if not _decodes(raw))
            raise DataError(f"{path} line {line}: not valid UTF-8 ({exc.reason}); re-export the file as UTF-8") from exc
        except csv.Error as exc:
            raise DataError(f"{path} line {reader.line_num}: not valid CSV ({exc}); fix or re-export the file") from exc


def _decodes(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _jsonl_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, object) for each non-blank line of a JSON Lines file."""
    try:
        lines = path.read_text(encoding="utf-8-sig").split("\n")  # not splitlines(): JSON strings may hold U+2028
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc}); re-save it as UTF-8") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number}: invalid JSON ({exc.msg} at column {exc.colno}); fix the line") from exc
        if not isinstance(record, dict):
            raise DataError(f"{path} line {number}: expected a JSON object of column: value, got {type(record).__name__}")
        yield f"{path} line {number}", record


def _rows(path: Path, where: str, record: dict[str, Any], columns: tuple[str, str, str | None, str | None]) -> list[Row]:
    """The rows of one record: one per caption, where its caption is a JSON list of texts (the
    captions of its image, as Flickr30k and COCO give them), else one."""
    image_column, caption_column, label_column, id_column = columns
    values: dict[str, str] = {}
    captions = record.get(caption_column)
    listed = isinstance(captions, list)
    if listed and not (captions and all(isinstance(c, str) and c.strip() for c in captions)):
        raise DataError(f"{where}: {caption_column} is a list that is empty or holds something other than non-empty texts; give a text or a list of texts")
    for column in (c for c in columns if c is not None and not (listed and c == caption_column)):
        if column not in record:
            present = ", ".join(k for k in record if k is not None) or "none"
            setting = {image_column: "image_column", caption_column: "caption_column", id_column: "image_id_column"}.get(column, "label_column")
            raise DataError(f"{where}: no column '{column}' (columns: {present}); set dataset.{setting} to one of them")
        value = record[column]
        wanted = (str, int) if column in (label_column, id_column) else str  # labels and ids may be numbers
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise DataError(_not_text(where, column, value))
        text = str(value).strip()
        if not text:
            raise DataError(f"{where}: empty {column}; fill it in or remove the row")
        values[column] = text
    image = path.parent / Path(values[image_column])
    image_id = values[id_column] if id_column else str(image)
    label = values.get(label_column) if label_column else None
    texts = [c.strip() for c in captions] if listed else [values[caption_column]]  # type: ignore[union-attr]
    return [Row(image, text, label, where, image_id) for text in texts]


def _not_text(where: str, column: str, value: Any) -> str:
    """Why a JSON value is refused where text belongs (the CSV reader gives only text)."""
    kind = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", dict: "an object", list: "a list"}
    shown = json.dumps(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"{where}: {column} is {kind.get(type(value), type(value).__name__)} ({shown}), not text; write it as a JSON string"
