"""In-process kill and resume: the same experiment trained uninterrupted and interrupted as Ctrl-C would
(SIGINT at a step: the step finishes, a checkpoint is written, the run stops), then resumed."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from mmreg.api import collate_for, prepare
from mmreg.components import LoopCallback
from mmreg.config import Experiment
from mmreg.data import AugmentedSplit, make_loader
from mmreg.errors import TrainingInterrupted
from mmreg.results import Metric
from mmreg.train import Trainer, TrainResult


def trainer(exp: Experiment, run_dir: Path, metric: str, callbacks: tuple[LoopCallback, ...] = ()) -> Trainer:
    """The experiment's Trainer, writing into ``run_dir``, with its validation split and its seed."""
    p = prepare(exp)
    collate = collate_for(p)
    val = make_loader(p.val_split, collate, exp.train.eval_batch_size, shuffle=False, seed=exp.seed)
    return Trainer(p.model, AugmentedSplit(p.train_split, p.augmenters, exp.seed), collate, val, exp.train,
                   seed=exp.seed, run_dir=run_dir, metric=Metric(metric), optim=exp.optim, callbacks=callbacks)  # fmt: skip


class Interrupt(LoopCallback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_start(self, step: int) -> None:
        if step == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def interrupted_and_resumed(exp: Experiment, root: Path, metric: str, at: int) -> tuple[TrainResult, TrainResult, Trainer, Path]:
    """(the uninterrupted result, the resumed result, the resumed Trainer, the uninterrupted run's directory)."""
    whole, parts = root / "whole", root / "parts"
    whole.mkdir(), parts.mkdir()
    uninterrupted = trainer(exp, whole, metric).fit()
    with pytest.raises(TrainingInterrupted):
        trainer(exp, parts, metric, (Interrupt(at),)).fit()
    second = trainer(exp, parts, metric)
    second.resume()
    return uninterrupted, second.fit(), second, whole
