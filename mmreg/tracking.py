"""Experiment trackers (TensorBoard, MLflow, Weights & Biases, Aim) fed with what metrics.jsonl holds.

Each tracker is accelerate's own class (``accelerate.tracking``: ``start``,
``store_init_configuration``, ``log``, ``finish``); where that interface lacks
something (artifacts, resuming a run, a failed run's status) the tracker's own
object (``.tracker``) is used. Only the main process logs. Offline by default:
TensorBoard event files in ``RUN_DIR/tensorboard``, an MLflow file store in
``RUN_DIR/mlruns``, W&B in offline mode in ``RUN_DIR/wandb``, an Aim repository
in ``RUN_DIR/.aim``, unless ``[track]`` gives a URI. The ids of the tracker runs
are kept in ``RUN_DIR/trackers.json`` so ``--resume`` continues the same ones.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .components import LoopCallback
from .errors import ConfigError
from .tables import flatten

if TYPE_CHECKING:
    from accelerate.tracking import GeneralTracker

    from .config import Experiment, TrackConfig
    from .train import Trainer

TRACKERS = ("tensorboard", "mlflow", "wandb", "aim")
MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb", "aim": "aim"}  # what each extra installs
IDS = "trackers.json"
NOT_LOGGED = ("step", "epoch", "split")  # the step is the x axis, the split the prefix; the epoch follows from the step


def check_trackers(track: TrackConfig) -> None:
    """Raise ConfigError naming the extra to install for the first tracker whose package is missing."""
    for name in track.trackers:
        if importlib.util.find_spec(MODULES[name]) is None:
            raise ConfigError(f"tracker '{name}' needs the {MODULES[name]} package, which is not installed; pip install 'mmreg[{name}]'")


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """A metrics.jsonl record as tracker scalars: every number but step and epoch, named ``SPLIT/KEY``
    (``train/loss``, ``train/lr``, ``train/loss/infonce``, ``val/recall@1``)."""
    split = record.get("split", "train")
    return {
        f"{split}/{key}": value
        for key, value in record.items()
        if key not in NOT_LOGGED and isinstance(value, int | float) and not isinstance(value, bool)
    }


def mlflow_key(key: str) -> str:
    """MLflow allows letters, digits, ``_ - . / :`` and spaces in names: ``val/recall@1`` -> ``val/recall_at_1``."""
    return re.sub(r"[^\w\-./: ]", "_", key.replace("@", "_at_"))


def hyperparameters(exp: Experiment) -> dict[str, str | int | float | bool]:
    """The resolved experiment as dotted keys (``train.lr``, ``fusion.heads``); lists and empty tables as JSON text."""
    from .config import to_file_layout

    flat = flatten(to_file_layout(exp))
    return {k: v if isinstance(v, str | int | float | bool) else json.dumps(v) for k, v in flat.items()}


def study_track(table: Mapping[str, Any] | None, study: str, study_dir: Path) -> dict[str, Any]:
    """A search trial's ``[track]`` table: the study as its group, and the study's own MLflow store and
    Aim repository (``STUDY_DIR/mlruns``, ``STUDY_DIR/.aim``) unless URIs are given, so each trial is
    one run under the study. Without trackers the table is returned as it is."""
    table = dict(table or {})
    if not table.get("trackers"):
        return table
    table["group"] = study
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        table.setdefault("mlflow_uri", (study_dir / "mlruns").absolute().as_uri())
    table.setdefault("aim_repo", str(study_dir.absolute()))
    return table


def use_mlflow(uri: str | None, default: Path) -> None:
    """Point MLflow at ``uri``, else ``MLFLOW_TRACKING_URI``, else a file store in ``default``.

    MLflow 3 keeps its file store in maintenance mode and refuses it unless
    ``MLFLOW_ALLOW_FILE_STORE`` is set; a file store is what logs offline without
    a database, so it is allowed for file-store URIs (a ``sqlite:///`` URI needs no flag).
    """
    import mlflow

    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default.absolute().as_uri()
    if "://" not in uri or uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(uri)


def open_study(track: TrackConfig, study: str, study_dir: Path) -> None:
    """Create the study's MLflow experiment once, before `--jobs` workers would race to create it."""
    if "mlflow" in track.trackers:
        import mlflow

        use_mlflow(track.mlflow_uri, study_dir / "mlruns")
        if mlflow.get_experiment_by_name(study) is None:
            mlflow.create_experiment(study)


class Tracking(LoopCallback):
    """The trackers of one run: a loop callback logging each metrics.jsonl record as it is written.

    Construct it before anything is built (a missing package is a ConfigError
    naming the extra), ``attach`` it once the run directory exists and any resume
    is done, ``finish`` it with ``curves.png``; as a context manager it ends the
    tracker runs of a run that raised (MLflow status FAILED, or KILLED when
    interrupted or pruned).
    """

    def __init__(self, track: TrackConfig, resume: Path | None = None) -> None:
        """``resume``: the run directory being resumed, whose ``trackers.json`` names the tracker runs to continue."""
        check_trackers(track)
        self.track = track
        self.trackers: dict[str, GeneralTracker] = {}
        self.step = 0
        self.ids: dict[str, str] = {}
        path = resume / IDS if resume is not None else None
        if track.trackers and path is not None and path.is_file():
            try:
                self.ids = dict(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError, ValueError, TypeError):
                raise ConfigError(f"{path} is not a readable JSON object; restore it, or delete it to start new tracker runs") from None

    def attach(self, trainer: Trainer, exp: Experiment, run_dir: Path) -> None:
        """Start every tracker on the main process and add this to the trainer's callbacks.

        A resumed run continues its tracker runs (ids in ``trackers.json``): TensorBoard
        hides the events after the checkpoint (``purge_step``), MLflow, W&B and Aim reopen
        the same run. Raises ConfigError when a tracker cannot start (a URI that cannot be reached).
        """
        if not self.track.trackers or not trainer.main:
            return
        from .runs import write_json

        self.step = trainer.loop.step
        ids = dict(self.ids)
        for name in dict.fromkeys(self.track.trackers):
            try:
                tracker = getattr(self, f"_open_{name}")(run_dir, ids.get(name))
                tracker.start()
                self.trackers[name] = tracker
                if name not in ids:  # a new tracker run (a resumed one holds the config already)
                    values = hyperparameters(exp)
                    tracker.store_init_configuration({mlflow_key(k): v for k, v in values.items()} if name == "mlflow" else values)
            except Exception as exc:  # the tracker's own: a refused connection, a bad URI
                self._end(failed=True)
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(f"tracker '{name}' could not start: {first}; check the [track] settings and the tracker's install") from exc
            ids[name] = self._run_id(name, tracker)
        write_json(run_dir / IDS, ids)
        trainer.callbacks.append(self)

    # -- accelerate's tracker classes, configured for a run directory -----------------

    def _open_tensorboard(self, run_dir: Path, run_id: str | None) -> GeneralTracker:
        from accelerate.tracking import TensorBoardTracker

        # events at or after the first step not in metrics.jsonl any more are hidden from readers
        return TensorBoardTracker("tensorboard", run_dir, **({"purge_step": self.step + 1} if run_id else {}))

    def _open_mlflow(self, run_dir: Path, run_id: str | None) -> GeneralTracker:
        from accelerate.tracking import MLflowTracker

        use_mlflow(self.track.mlflow_uri, run_dir / "mlruns")
        return MLflowTracker(
            experiment_name=self.track.group or self.track.project,
            run_id=run_id,
            run_name=run_dir.name,
            tags={"mmreg.run_dir": str(run_dir.absolute())},
        )

    def _open_wandb(self, run_dir: Path, run_id: str | None) -> GeneralTracker:
        import wandb
        from accelerate.tracking import WandBTracker

        online = self.track.wandb_url is not None
        return WandBTracker(
            self.track.project,
            name=run_dir.name,
            group=self.track.group,
            dir=str(run_dir),
            mode="online" if online else "offline",
            id=run_id,
            resume="allow" if run_id else None,
            settings=wandb.Settings(base_url=self.track.wandb_url) if online else None,
        )

    def _open_aim(self, run_dir: Path, run_id: str | None) -> GeneralTracker:
        from accelerate.tracking import AimTracker

        repo = self.track.aim_repo or str(run_dir)
        return AimTracker(run_dir.name, repo, experiment=self.track.group or self.track.project, run_hash=run_id)

    @staticmethod
    def _run_id(name: str, tracker: GeneralTracker) -> str:
        """What ``trackers.json`` keeps to reopen the tracker run: its id (TensorBoard: its directory)."""
        run = tracker.tracker
        return {"mlflow": lambda: run.info.run_id, "wandb": lambda: run.id, "aim": lambda: run.hash}.get(name, lambda: "tensorboard")()

    # -- the loop --------------------------------------------------------------------

    def on_log(self, record: dict[str, Any]) -> None:
        values = scalars(record)
        self.step = int(record.get("step", self.step))
        if not values:
            return
        for name, tracker in self.trackers.items():
            tracker.log({mlflow_key(k): v for k, v in values.items()} if name == "mlflow" else values, step=self.step)

    def finish(self, curves: Path, best: Mapping[str, Any] | None = None) -> None:
        """Log the deciding metric's kept value as ``best/METRIC`` (``best``: summary.json's ``best``)
        and ``curves`` (the run's curves.png) as an artifact of every tracker run, then end them."""
        if not self.trackers:
            return
        from PIL import Image

        if best is not None and best.get("value") is not None:
            self.on_log({"step": self.step, "split": "best", best["metric"]: best["value"]})

        if curves.is_file():
            for name, tracker in self.trackers.items():
                if name == "mlflow":
                    tracker.log_artifact(str(curves))
                elif name == "wandb":
                    import wandb

                    artifact = wandb.Artifact(f"{tracker.tracker.id}-curves", type="plot")
                    artifact.add_file(str(curves))
                    tracker.tracker.log_artifact(artifact)
                else:  # TensorBoard and Aim keep images, not files
                    with Image.open(curves) as image:
                        rgb = image.convert("RGB")
                    if name == "tensorboard":
                        import numpy as np

                        tracker.log_images({"curves": np.asarray(rgb)[None]}, step=self.step, dataformats="NHWC")
                    else:
                        tracker.log_images({"curves": rgb}, step=self.step)
        self._end(failed=False)

    def __enter__(self) -> Tracking:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if kind is not None and self.trackers:
            self._end(failed=True, stopped=self._stopped(exc))

    @staticmethod
    def _stopped(exc: BaseException | None) -> bool:
        """Whether the run was stopped from outside (Ctrl-C, a signal, a search's pruner) rather than failing."""
        from .errors import TrainingInterrupted

        optuna = sys.modules.get("optuna")
        pruned = optuna is not None and isinstance(exc, optuna.TrialPruned)
        return isinstance(exc, KeyboardInterrupt | TrainingInterrupted) or pruned

    def _end(self, *, failed: bool, stopped: bool = False) -> None:
        """End every started tracker run; a failure while ending one never hides the run's own error."""
        for name, tracker in self.trackers.items():
            try:
                if failed and name == "mlflow":
                    import mlflow

                    mlflow.end_run(status="KILLED" if stopped else "FAILED")
                elif failed and name == "wandb":
                    tracker.tracker.finish(exit_code=1)
                else:
                    tracker.finish()
            except Exception:
                if not failed:
                    raise
        self.trackers = {}


__all__ = ["TRACKERS", "Tracking", "check_trackers", "hyperparameters", "mlflow_key", "open_study", "scalars", "study_track", "use_mlflow"]
