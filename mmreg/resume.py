"""What a checkpoint remembers of the run that wrote it, so `--resume` continues that run and no other.

A run's trajectory (the samples it sees, in which order, with which weights and
updates) is defined by nearly every setting. Only the settings in ``MAY_CHANGE``
can be edited in a run directory's ``config.toml`` between a stop and a resume.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .config import Experiment, to_file_layout
from .errors import ConfigError
from .history import flatten

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


def check_resume(run_dir: Path, exp: Experiment) -> None:
    """Refuse to resume when the run directory's config.toml was edited in a setting that defines
    the run, or the process count changed; changes no file.

    Raises ConfigError naming the setting, the checkpoint's value and the new one.
    """
    from .checkpoint import read_state

    saved = read_state(run_dir / "checkpoints" / "last")["trajectory"]
    now = trajectory(exp, int(os.environ.get("WORLD_SIZE", "1")))
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key):
            where = "the process count" if key == "processes" else f"setting '{key}'"
            raise ConfigError(
                f"cannot resume {run_dir}: {where} was {saved.get(key)!r} when the checkpoint was written and is "
                f"{now.get(key)!r} now; restore it (only {', '.join(sorted(MAY_CHANGE))} may change on resume)"
            )
