"""What a checkpoint remembers of the run that wrote it, so `--resume` continues that run and no other.

A run's trajectory (the samples it sees, in which order, with which weights and
updates) is defined by nearly every setting. Only the settings in ``MAY_CHANGE``
can be edited in a run directory's ``config.toml`` between a stop and a resume.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .config import LEGACY_TASK_SETTINGS, Experiment, to_file_layout
from .errors import ConfigError
from .tables import flatten

MAY_CHANGE = frozenset(
    {
        "name",
        "runs_dir",
        "train.device",
        "train.eval_every",
        "train.eval_batch_size",
        "train.checkpoint_every",
        "train.log_every",
        "data.num_workers",
    }
)


def trajectory(exp: Experiment, processes: int) -> dict[str, Any]:
    """The settings a checkpoint stores: every dotted setting but those in ``MAY_CHANGE``, and the
    number of processes (each takes its own shard of every batch)."""
    settings = {k: v for k, v in flatten(to_file_layout(exp)).items() if k not in MAY_CHANGE}
    return {**settings, "processes": processes}


COMPONENTS = ("encoder.", "fusion.", "peft.", "dataset.", "task.", "loss.", "augment.", "balance.")  # sections of component parameters


def upgrade_trajectory(saved: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's settings in today's layout. Written before tasks had parameters: ``task``
    (a name, or absent where the losses chose it) becomes ``task.name``, and each setting of
    ``LEGACY_TASK_SETTINGS`` the task's parameter of that name, where the task has one (as
    ``mmreg.api.resolve`` places them in the run's config.toml). A parameter a component gained
    since the checkpoint, or a core setting declaring what runs used before it (``core_before``),
    takes its value now: the run had no such setting, and its recorded
    experiment gave it what runs used before it (``mmreg.recorded``)."""
    from .recorded import core_before

    out = saved if "task.name" in saved else _untasked(saved, now)
    added = core_before()
    return {**{k: v for k, v in now.items() if (k.startswith(COMPONENTS) or k in added) and k not in out}, **out}


def _untasked(saved: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in saved.items() if k != "task"}
    out["task.name"] = saved.get("task", now.get("task.name"))
    for section, keys in LEGACY_TASK_SETTINGS.items():
        for key in keys:
            value = out.pop(f"{section}.{key}", None)
            if f"task.{key}" in now and value is not None:
                out[f"task.{key}"] = value
    return out


def check_resume(run_dir: Path, exp: Experiment) -> None:
    """Refuse to resume when the run directory's config.toml was edited in a setting that defines
    the run, or the process count changed; changes no file.

    Raises ConfigError naming the setting, the checkpoint's value and the new one.
    """
    from .checkpoint import read_state

    now = trajectory(exp, int(os.environ.get("WORLD_SIZE", "1")))
    saved = upgrade_trajectory(read_state(run_dir / "checkpoints" / "last")["trajectory"], now)
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key):
            where = "the process count" if key == "processes" else f"setting '{key}'"
            raise ConfigError(
                f"cannot resume {run_dir}: {where} was {saved.get(key)!r} when the checkpoint was written and is "
                f"{now.get(key)!r} now; restore it (only {', '.join(sorted(MAY_CHANGE))} may change on resume)"
            )
