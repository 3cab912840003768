"""Run directories: resolved config, versions, metrics, summary, weights; written atomically."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it over, so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


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
