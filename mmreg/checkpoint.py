"""Checkpoints without pickle: tensors in safetensors, everything else in JSON; each checkpoint a
directory made current by one atomic rename, so a kill never leaves a mix of two."""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from .errors import ConfigError
from .runs import make_shareable


@dataclass
class LoopState:
    """Where the loop is: restored on resume so the run continues as if never stopped."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this epoch already trained on
    samples: int = 0
    seconds: float = 0.0
    best: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    bad_in_a_row: int = 0
    skipped_steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # validation results so far


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and a JSON skeleton."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for pid, entries in state["state"].items():
        skeleton["state"][str(pid)] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().contiguous().cpu()
                skeleton["state"][str(pid)][key] = {"tensor": f"{pid}.{key}"}
            else:
                skeleton["state"][str(pid)][key] = {"value": value}
    return tensors, skeleton


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], skeleton: dict[str, Any]) -> dict[str, Any]:
    state = {
        int(pid): {k: tensors[v["tensor"]] if "tensor" in v else v["value"] for k, v in entries.items()}
        for pid, entries in skeleton["state"].items()
    }
    return {"state": state, "param_groups": skeleton["param_groups"]}


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {"kind": kind, "keys": keys.tolist(), "pos": pos, "has_gauss": has_gauss, "gauss": gauss}
    version, internal, gauss_next = random.getstate()
    return tensors, {"numpy": numpy_state, "python": [version, list(internal), gauss_next]}


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    n = meta["numpy"]
    np.random.set_state((n["kind"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _fsync(path: Path) -> None:
    """Flush a file, or a directory's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_directory(checkpoints: Path, name: str, write: Callable[[Path], None]) -> Path:
    """Write a whole checkpoint directory and make ``checkpoints/NAME`` point to it in one atomic step.

    ``write`` fills a fresh hidden directory; its files and the directory are
    fsynced, it is renamed to ``NAME.<unique>``, and the link ``NAME`` is replaced
    by one ``os.replace`` (then the parent is fsynced). A kill at any moment leaves
    ``NAME`` pointing to a whole old or a whole new checkpoint; older directories
    are removed only after the switch. Returns the new directory.
    """
    checkpoints.mkdir(parents=True, exist_ok=True)
    unique = uuid.uuid4().hex[:8]
    partial = checkpoints / f".{name}.{unique}.partial"
    partial.mkdir()
    try:
        write(partial)
        for file in partial.iterdir():
            make_shareable(file)
            _fsync(file)
        _fsync(partial)
        final = checkpoints / f"{name}.{unique}"
        os.rename(partial, final)
        link = checkpoints / f".{name}.{unique}.link"
        os.symlink(final.name, link)
        current = checkpoints / name
        if current.is_dir() and not current.is_symlink():  # written by mmreg 0.1 as a plain directory
            os.rename(current, checkpoints / f"{name}.{unique}-old")
        os.replace(link, current)
        _fsync(checkpoints)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    clean_checkpoints(checkpoints)
    return final


def clean_checkpoints(checkpoints: Path) -> None:
    """Remove what a kill mid-write leaves behind (partial directories, stray links) and every
    checkpoint directory that ``last`` and ``best`` no longer point to."""
    if not checkpoints.is_dir():
        return
    current = {os.readlink(link) for link in (checkpoints / "last", checkpoints / "best") if link.is_symlink()}
    for entry in checkpoints.iterdir():
        if entry.name in ("last", "best") or entry.name in current:
            continue
        if entry.name.startswith((".last.", ".best.", "last.", "best.")):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def save_checkpoint(
    checkpoints: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    loop: LoopState,
    trajectory: Mapping[str, Any],
    ema: torch.nn.Module | None = None,
) -> None:
    """Write ``checkpoints/last`` as a whole (see ``commit_directory``): weights and optimizer
    moments in safetensors, RNG state, and in state.json the loop position, scheduler, scaler and
    ``trajectory``, the settings that define the run's path (checked again on resume); with
    ``ema`` (train.ema) the moving average's weights as ``ema.safetensors``."""

    def write(directory: Path) -> None:
        save_model(model, str(directory / "model.safetensors"))
        if ema is not None:
            save_model(ema, str(directory / "ema.safetensors"))
        opt_tensors, opt_skeleton = _flatten_optimizer(optimizer.state_dict())
        rng_tensors, rng_meta = _rng_state()
        save_file(opt_tensors, str(directory / "optimizer.safetensors"))
        save_file(rng_tensors, str(directory / "rng.safetensors"))
        state = {
            "loop": asdict(loop),
            "optimizer": opt_skeleton,
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng_meta,
            "trajectory": dict(trajectory),
        }
        (directory / "state.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")

    commit_directory(checkpoints, "last", write)


def save_best(checkpoints: Path, model: torch.nn.Module, record: Mapping[str, Any]) -> None:
    """Write ``checkpoints/best`` (weights and the evaluation that made them best) as a whole."""

    def write(directory: Path) -> None:
        save_model(model, str(directory / "model.safetensors"))
        (directory / "state.json").write_text(json.dumps(dict(record), indent=2) + "\n", encoding="utf-8")

    commit_directory(checkpoints, "best", write)


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Any failure while reading one checkpoint file becomes one line that names the file."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as exc:
        if not path.exists():
            problem = "is missing"
        else:
            detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
            problem = f"is damaged or does not match this run ({type(exc).__name__}{': ' + detail[:200] if detail else ''})"
        raise ConfigError(f"checkpoint file {path} {problem}; the run cannot resume from it") from exc


def read_state(directory: Path) -> dict[str, Any]:
    """The state.json of a ``last`` checkpoint; ConfigError when there is none or it is damaged."""
    path = directory / "state.json"
    if directory.is_symlink() and not directory.exists():
        raise ConfigError(f"checkpoint {directory} points to {os.readlink(directory)}, which is missing; the run cannot resume")
    if not directory.exists():
        raise ConfigError(f"no checkpoint in {directory.parent}; the run stopped before its first checkpoint, start it anew")
    if not path.is_file():
        raise ConfigError(f"checkpoint file {path} is missing; the run cannot resume from it")
    with _reading(path):
        state = json.loads(path.read_text(encoding="utf-8"))
        LoopState(**state["loop"])
        if not isinstance(state["trajectory"], dict):
            raise ValueError("'trajectory' is not a table")
        return state


def load_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any, ema: torch.nn.Module | None = None
) -> LoopState:
    """Restore model, optimizer, scheduler, scaler and RNG from ``directory`` (and the moving
    average's weights into ``ema``); return the loop position.

    Raises ConfigError naming the file when one is missing, truncated, not safetensors
    (a pickle is never unpickled) or of another shape than this run's.
    """
    state = read_state(directory)
    with _reading(directory / "model.safetensors"):
        load_model(model, str(directory / "model.safetensors"))
    if ema is not None:
        with _reading(directory / "ema.safetensors"):
            load_model(ema, str(directory / "ema.safetensors"))
    with _reading(directory / "optimizer.safetensors"):
        optimizer.load_state_dict(_unflatten_optimizer(load_file(str(directory / "optimizer.safetensors")), state["optimizer"]))
    with _reading(directory / "state.json"):
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
    with _reading(directory / "rng.safetensors"):
        _set_rng_state(load_file(str(directory / "rng.safetensors")), state["rng"])
    return LoopState(**state["loop"])
