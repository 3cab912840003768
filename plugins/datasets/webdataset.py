"""`webdataset`: image-caption samples stored in WebDataset ``.tar`` shards, read as a stream.

A sample is the files of a shard sharing a key (``000123.jpg``, ``000123.txt``), stored one
after another, as the webdataset library writes and reads them (CLIP-scale data: LAION,
DataComp; its ``tariterators.group_by_keys`` starts a new sample wherever the key changes).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from mmreg.badimages import UnreadableSample
from mmreg.components import Dataset, Sample
from mmreg.errors import ConfigError, DataError
from mmreg.images import open_image
from mmreg.streams import IterableSamples, LazySample, deal, lane_seed

# the members webdataset's reader skips as metadata (``tariterators.tar_file_iterator``'s ``skip_meta``)
META = re.compile(r"__[^/]*__($|/)")


@dataclass(frozen=True)
class Entry:
    """One sample as a shard lists it: where its image is and its captions."""

    key: str
    image: str  # the image file's extension
    captions: tuple[str, ...]


def expand(patterns: str | list[str], setting: str) -> list[Path]:
    """The shard files ``patterns`` name, brace patterns expanded (``webdataset.shardlists.expand_urls``)."""
    from webdataset.shardlists import expand_urls

    given = [patterns] if isinstance(patterns, str) else list(patterns)
    paths = [Path(url) for pattern in given for url in expand_urls(pattern)]
    missing = [p for p in paths if not p.is_file()]
    if not paths or len(missing) == len(paths):
        raise DataError(
            f"dataset.{setting}: no shard matches {', '.join(given) or 'nothing'}; give local .tar files "
            f"or a brace pattern such as shards/{{000000..000009}}.tar"
        )
    if missing:
        raise DataError(f"dataset.{setting}: {len(missing)} of {len(paths)} shards are missing, e.g. {missing[0]}; fix the pattern or the files")
    return paths


def captions_of(raw: bytes, suffix: str, field: str, where: str) -> tuple[str, ...]:
    """The captions in a caption file: the text, or the json string, list or object's ``field``."""
    text = raw.decode("utf-8", errors="replace")
    if suffix != "json":
        value: object = text.strip()
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg}); fix the shard") from None
        if isinstance(value, dict):
            if field not in value:
                raise DataError(f"{where}: no '{field}' in its JSON (keys: {', '.join(value) or 'none'}); set dataset.caption_field to one of them")
            value = value[field]
    found = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, list) else None
    if not found or not all(isinstance(c, str) and c.strip() for c in found):
        raise DataError(f"{where}: the caption is not a text or a list of texts; fix the shard")
    return tuple(c.strip() for c in found)


def index_shard(path: Path, image_keys: list[str], caption_keys: list[str], field: str) -> list[Entry]:
    """Every sample of a shard, read from the tar headers and the caption files only, as webdataset
    groups them (``tariterators.group_by_keys``): a sample whose files are not stored one after
    another, or with two files of one extension, is refused, since webdataset would read it as
    several samples (or fail)."""
    from webdataset.tariterators import base_plus_ext

    found: dict[str, dict[str, bytes | None]] = {}
    current = None
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                key, suffix = base_plus_ext(member.name)  # webdataset's rule: the key ends at the file name's first dot
                if not member.isreg() or key is None or META.match(member.name):
                    continue
                suffix = suffix.lower()
                if key != current and key in found:
                    raise DataError(
                        f"shard {path}: the files of sample '{key}' are not stored together ({member.name} comes after other "
                        f"samples' files), and webdataset reads a sample from adjacent files; re-create the shard with its "
                        f"files sorted by name (tar --sort=name) or with webdataset.TarWriter"
                    )
                if suffix in found.get(key, {}):
                    raise DataError(f"shard {path}: sample '{key}' has two .{suffix} files ({member.name}); keep one")
                current = key
                data = tar.extractfile(member).read() if suffix in caption_keys else None  # type: ignore[union-attr]
                found.setdefault(key, {})[suffix] = data
    except tarfile.TarError:  # its message lists every compression tried, over several lines
        raise DataError(f"shard {path} is not a readable tar file; rewrite it") from None
    except OSError as exc:
        raise DataError(f"shard {path} cannot be read ({exc.strerror or exc}); check the file") from None
    entries = []
    for key, files in found.items():
        image = next((k for k in image_keys if k in files), None)
        caption = next((k for k in caption_keys if k in files), None)
        for wanted, setting, got in ((image_keys, "image_key", image), (caption_keys, "caption_key", caption)):
            if got is None:
                raise DataError(
                    f"shard {path} sample '{key}' has no {' or '.join(wanted)} file (it has: {', '.join(sorted(files))}); "
                    f"set dataset.{setting} to its extension"
                )
        entries.append(Entry(key, image, captions_of(files[caption] or b"", caption, field, f"shard {path} sample '{key}'")))  # type: ignore[arg-type]
    if not entries:
        raise DataError(f"shard {path} holds no samples; remove it from the pattern")
    return entries


def decode(data: bytes, caption: str, image_id: str | None, where: str) -> Sample:
    """The sample, its image decoded; ``UnreadableSample`` naming ``where`` if it cannot be (the
    loaders skip and count it, ``mmreg.badimages``)."""
    buffer = io.BytesIO(data)
    try:
        image = open_image(buffer)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        reason = " ".join(str(exc).replace(f" {buffer!r}", "").split()) or type(exc).__name__  # PIL names the buffer object
        raise UnreadableSample(where, f"not a readable image ({reason})") from None
    return Sample(image, caption, image_id=image_id)


class ShardStream(IterableSamples):
    """One split's shards; a sample with several captions gives one row per caption, sharing
    ``image_id`` (the shard and the sample's key)."""

    def __init__(self, name: str, shards: list[Path], entries: dict[Path, list[Entry]], seed: int, buffer: int) -> None:
        self.name, self.shards, self.entries = name, shards, entries
        self.seed, self.buffer = seed, buffer
        self.rows = sum(len(e.captions) for shard in shards for e in entries[shard])

    def __len__(self) -> int:
        return self.rows

    def _read(self, shards: list[Path]) -> Iterator[LazySample]:
        """Every row of ``shards``, in stored order, images still encoded."""
        from webdataset.tariterators import tarfile_samples

        for shard in shards:
            index = {e.key: e for e in self.entries[shard]}
            for record in tarfile_samples([{"url": str(shard)}]):
                entry = index[record["__key__"]]
                image_id = f"{shard}#{entry.key}" if len(entry.captions) > 1 else None  # keys repeat across shards
                where = f"shard {shard} member {entry.key}.{entry.image}"
                for caption in entry.captions:
                    yield LazySample(partial(decode, record[entry.image], caption, image_id, where), where)

    def stream(self, lane: int, lanes: int, epoch: int, repeat: int = 0) -> Iterator[LazySample]:
        import webdataset

        shards, every = deal(self.shards, lane, lanes, self.seed, epoch)
        rows = (row for n, row in enumerate(self._read(shards)) if n % every == lane % every)
        if self.buffer <= 1:
            yield from rows
            return
        shuffle = webdataset.shuffle(self.buffer, initial=self.buffer, seed=lane_seed(self.seed, epoch, lane, repeat))
        yield from shuffle(rows)


class WebDataset(Dataset):
    """Training and validation splits from two sets of WebDataset shards, counted and checked
    (every sample has an image and a caption) before anything trains."""

    def __init__(
        self,
        *,
        train: str | list[str],
        val: str | list[str],
        image_key: str,
        caption_key: str,
        caption_field: str,
        shuffle_buffer: int,
        seed: int,
    ) -> None:
        try:
            import webdataset  # noqa: F401
        except ImportError:
            raise ConfigError("dataset 'webdataset' needs the webdataset package; pip install 'mmreg[webdataset]'") from None
        image_keys = [k.strip().lower() for k in image_key.split(";") if k.strip()]
        caption_keys = [k.strip().lower() for k in caption_key.split(";") if k.strip()]
        self._splits = {}
        for name, patterns, buffer in (("train", train, shuffle_buffer), ("val", val, 0)):
            shards = expand(patterns, name)
            entries = {shard: index_shard(shard, image_keys, caption_keys, caption_field) for shard in shards}
            self._splits[name] = ShardStream(f"dataset 'webdataset' split '{name}'", shards, entries, seed, buffer)

    def split(self, name: str) -> ShardStream:
        if name not in self._splits:
            raise DataError(f"dataset 'webdataset' has no split '{name}' (splits: train, val)")
        return self._splits[name]

    def check(self, name: str) -> list[tuple[int, str]]:
        self.split(name)
        return []  # keys and captions are checked when the shards are indexed; images by mmreg.streams.check_stream

    def texts(self, name: str, field: str = "caption") -> list[str]:
        if field != "caption":
            raise DataError(f"dataset 'webdataset' has no '{field}' texts, only captions")
        split = self.split(name)
        return [c for shard in split.shards for e in split.entries[shard] for c in e.captions]

