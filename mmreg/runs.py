"""Run directories: resolved config, versions, metrics, summary, weights; written atomically."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def make_shareable(path: Path) -> None:
    """Give a file the mode the umask allows: writers such as safetensors create 0600 files; runs are for sharing."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary name beside ``path``, renamed over it on success, so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        make_shareable(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: str | bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Weights as safetensors (never pickle), written atomically."""
    from safetensors.torch import save_model

    with atomic_path(path) as tmp:
        save_model(model, str(tmp))


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def check_runs_dir(runs_dir: str | Path) -> None:
    """Refuse a runs directory that cannot be created or written, before anything is built.

    Raises ConfigError when it, or the nearest existing folder above it, is not a
    writable directory.
    """
    check_destination(runs_dir, "runs directory", "--runs-dir")


def check_destination(path: str | Path, what: str, flag: str) -> None:
    """Refuse a folder to write into (a runs directory, an export, a report) that cannot be created
    or written, before anything is built or written: ConfigError naming ``what`` and the ``flag``
    that sets it when the folder, or the nearest existing folder above it, is a file or not writable."""
    from .errors import ConfigError

    absolute = Path(path).absolute()
    existing = next(p for p in (absolute, *absolute.parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == absolute else f"is under {existing}, which is a file"
        raise ConfigError(f"{what} {path} {where}; give a directory with {flag}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: {existing} is not writable; give another {flag}")


def create_run_dir(runs_dir: str | Path, name: str | None, default_name: str) -> Path:
    """A new, empty run directory; an existing one is never reused or overwritten."""
    base = Path(runs_dir)
    stem = _slug(name) if name else f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(default_name)}"
    base.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        candidate = base / (stem if i == 1 else f"{stem}-{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"no free run directory name for {stem} in {base}")


def package_versions(plugin_versions: Mapping[str, str | None]) -> dict[str, Any]:
    """Versions of mmreg, its main libraries and every loaded plugin, for the run record."""
    import importlib.metadata as md
    import platform

    libs = {}
    for dist in ("mmreg", "torch", "transformers", "tokenizers", "timm", "peft", "accelerate", "pluggy"):
        try:
            libs[dist] = md.version(dist)
        except md.PackageNotFoundError:
            libs[dist] = None
    return {"python": platform.python_version(), "packages": libs, "plugins": dict(plugin_versions)}
