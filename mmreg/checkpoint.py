"""Checkpoints without pickle: tensors in safetensors, everything else in JSON, written atomically."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file

from .errors import ConfigError
from .runs import atomic_path, save_weights, write_json


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


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    loop: LoopState,
) -> None:
    """Write a whole checkpoint. Each file is renamed into place; state.json goes last, so a
    directory whose state.json names step N holds step N's weights and optimizer."""
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(model, directory / "model.safetensors")
    opt_tensors, opt_skeleton = _flatten_optimizer(optimizer.state_dict())
    rng_tensors, rng_meta = _rng_state()
    with atomic_path(directory / "optimizer.safetensors") as tmp:
        save_file(opt_tensors, str(tmp))
    with atomic_path(directory / "rng.safetensors") as tmp:
        save_file(rng_tensors, str(tmp))
    write_json(
        directory / "state.json",
        {
            "loop": asdict(loop),
            "optimizer": opt_skeleton,
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng_meta,
        },
    )


def load_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any
) -> LoopState:
    """Restore model, optimizer, scheduler, scaler and RNG; return the loop position."""
    state_path = directory / "state.json"
    if not state_path.is_file():
        raise ConfigError(f"no checkpoint in {directory} (state.json missing); the run stopped before its first checkpoint")
    try:
        state = json.loads(state_path.read_text())
        load_model(model, str(directory / "model.safetensors"))
        optimizer.load_state_dict(_unflatten_optimizer(load_file(str(directory / "optimizer.safetensors")), state["optimizer"]))
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(load_file(str(directory / "rng.safetensors")), state["rng"])
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ConfigError(f"checkpoint {directory} cannot be loaded ({type(exc).__name__}: {exc}); it does not match this run") from exc
    return LoopState(**state["loop"])
