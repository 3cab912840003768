"""`progressive`: a tower frozen for the first steps, then both train; the switch is exact and resumable."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mmreg
from mmreg.api import collate_for, prepare
from mmreg.components import LoopCallback
from mmreg.config import validate
from mmreg.errors import ConfigError
from mmreg.train import Trainer
from mmreg_plugins.peft.progressive import Progressive
from mmreg.results import Metric

SWITCH = 3


def experiment(tmp_path: Path, **peft: object) -> dict:
    return {
        "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32, "layers": 1},
        "fusion": {"name": "none"},
        "peft": {"name": "progressive", "frozen": ["vision"], "frozen_for": SWITCH, "unit": "steps", **peft},
        "dataset": {"name": "shapes", "train_size": 32, "val_size": 16, "image_size": 32},
        "model": {"dim": 32},
        "train": {"batch_size": 8, "eval_batch_size": 16, "lr": 3e-3, "max_steps": 6, "checkpoint_every": 1, "warmup_ratio": 0.0},
        "runs_dir": str(tmp_path),
    }


class StepClock(LoopCallback):
    def __init__(self) -> None:
        self.step = -1

    def on_step_start(self, step: int) -> None:
        self.step = step


@pytest.mark.parametrize("under", ["full", "lora"])
def test_the_frozen_tower_gets_gradients_exactly_from_the_switch_step(tmp_path: Path, under: str) -> None:
    exp = validate(experiment(tmp_path, under=under))
    p = prepare(exp)
    clock = StepClock()
    trainer = Trainer(
        p.model, p.train_split, collate_for(p), [], exp.train, seed=0, run_dir=tmp_path, metric=Metric("recall@1"),
        callbacks=[p.strategy, clock],
    )  # fmt: skip
    trainer.evaluate = lambda: {"recall@1": 0.0}  # type: ignore[method-assign]  # gradients are what is watched
    got: dict[str, set[int]] = {"vision": set(), "text": set()}
    for name, tower in p.model.encoder.towers().items():
        for param in tower.module(p.model.encoder).parameters():
            if param.requires_grad:  # everything the optimizer holds for this tower
                param.register_post_accumulate_grad_hook(lambda _, name=name: got[name].add(clock.step))
    trainer.fit()
    assert got["text"] == set(range(6))
    assert got["vision"] == set(range(SWITCH, 6)), "vision must train from step 3 on, and not before"


@pytest.mark.parametrize("under", ["full", "lora"])
def test_resume_across_the_switch_ends_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, under: str) -> None:
    whole = mmreg.run({**experiment(tmp_path, under=under), "name": "whole"}, progress=False)

    original = Progressive.on_step_start

    def stop_before_step_2(self: Progressive, step: int) -> None:
        if step == 2:
            raise KeyboardInterrupt  # a kill right after the checkpoint of step 2, before the switch
        original(self, step)

    monkeypatch.setattr(Progressive, "on_step_start", stop_before_step_2)
    with pytest.raises(KeyboardInterrupt):
        mmreg.run({**experiment(tmp_path, under=under), "name": "cut"}, progress=False)
    monkeypatch.setattr(Progressive, "on_step_start", original)
    resumed = mmreg.run(resume=tmp_path / "cut", progress=False)

    assert resumed["metrics"] == whole["metrics"] and resumed["final_loss"] == whole["final_loss"]
    a, b = load_file(tmp_path / "cut" / "model.safetensors"), load_file(tmp_path / "whole" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_progressive_longer_than_the_run_is_refused_with_what_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^peft.frozen_for: 6 steps is not shorter than the run \(6 steps\); allowed: at most 5 steps"):
        mmreg.run(experiment(tmp_path, frozen_for=6), progress=False)
    with pytest.raises(ConfigError, match=r"peft.frozen_for: 2 epochs \(8 steps\) .* allowed: at most 1 epochs"):
        exp = experiment(tmp_path, frozen_for=2, unit="epochs")
        mmreg.run({**exp, "train": {**exp["train"], "max_steps": 8}}, progress=False)


def test_a_frozen_tower_with_nothing_to_unfreeze_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="peft.frozen: the vision tower has no trainable weight under 'freeze'"):
        prepare(validate(experiment(tmp_path, under="freeze")))
