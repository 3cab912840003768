"""train.ema: a moving average of the weights (timm's ModelEmaV3), evaluated as ema/NAME beside
them, checkpointed and resumed exactly, and able to decide the best checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from interrupted import interrupted_and_resumed
from test_cli import cli, one_error_line

import mmreg
from mmreg.config import validate
from mmreg.ema import moving_average

TINY = {
    "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32, "layers": 1},
    "fusion": {"name": "none"},
    "dataset": {"name": "shapes", "train_size": 32, "val_size": 16, "image_size": 32},
    "model": {"dim": 32},
    "train": {"batch_size": 8, "eval_batch_size": 16, "lr": 3e-3, "max_steps": 4, "eval_every": 2, "device": "cpu"},
}


def test_the_average_follows_the_formula_and_decay_zero_is_the_weights():
    layer = torch.nn.Linear(2, 1, bias=False)
    ema = moving_average(layer, 0.5, None)
    for step, value in enumerate((1.0, 3.0, 7.0), start=1):
        layer.weight.data.fill_(value)
        ema.update(layer, step=step)
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 0.5 * (0.5 * 1.0 + 0.5 * 3.0) + 0.5 * 7.0))  # step 1 copies
    warm = moving_average(layer, 0.99, 1.0)  # warm-up power 1: decay min(0.99, 1 - 1/(1 + s)) after the copy
    assert warm.get_decay(3) == pytest.approx(1 - 1 / 3) and warm.get_decay(1000) == 0.99
    assert moving_average(layer, None, None) is None


def test_a_run_records_the_average_beside_the_weights_and_decay_zero_equals_them(tmp_path):
    summary = mmreg.run({**TINY, "train": {**TINY["train"], "ema": 0.0}, "runs_dir": str(tmp_path)}, progress=False)
    run = Path(summary["run_dir"])
    assert {"recall@1", "ema/recall@1"} <= set(summary["metrics"])
    plain = {k: v for k, v in summary["metrics"].items() if not k.startswith("ema/")}
    assert {k.removeprefix("ema/"): v for k, v in summary["metrics"].items() if k.startswith("ema/")} == plain  # decay 0: the weights
    last = run / "checkpoints" / "last"
    weights, average = load_file(last / "model.safetensors"), load_file(last / "ema.safetensors")
    assert weights.keys() == average.keys() and all(torch.equal(weights[k], average[k]) for k in weights)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("ema/recall@1" in r for r in rows if r["split"] == "val") and (run / "curves.png").is_file()
    assert summary["best"]["metric"] == "recall@1"  # the run's own headline unless the average's is named


def test_the_average_can_decide_the_best_checkpoint(tmp_path):
    train = {**TINY["train"], "ema": 0.9, "metric": "ema/recall@1", "max_steps": 2}
    summary = mmreg.run({**TINY, "train": train, "runs_dir": str(tmp_path)}, progress=False)
    run = Path(summary["run_dir"])
    assert summary["best"]["metric"] == "ema/recall@1" and summary["best"]["step"] == 2
    best, average = load_file(run / "checkpoints" / "best" / "model.safetensors"), load_file(run / "checkpoints" / "last" / "ema.safetensors")
    assert all(torch.equal(best[k], average[k]) for k in best)  # the kept checkpoint is the average, not the weights
    weights = load_file(run / "checkpoints" / "last" / "model.safetensors")
    assert any(not torch.equal(weights[k], average[k]) for k in weights)


def test_killed_and_resumed_the_average_is_bit_identical(tmp_path):
    exp = validate({**TINY, "train": {**TINY["train"], "ema": 0.8, "checkpoint_every": 1}, "runs_dir": str(tmp_path)})

    uninterrupted, resumed, second, whole = interrupted_and_resumed(exp, tmp_path, "recall@1", at=3)
    assert resumed.metrics == uninterrupted.metrics and "ema/recall@1" in resumed.metrics
    a, b = load_file(whole / "checkpoints" / "last" / "ema.safetensors"), second.ema.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_average_metric_without_an_average_is_refused_in_one_line(tmp_path):
    line = one_error_line(cli("run", "--max-steps", "1", "--set", "train.metric=ema/recall@1", "--runs-dir", "runs", cwd=tmp_path))
    assert "train.metric 'ema/recall@1' is the weights' moving average's, but train.ema is unset" in line
    assert not (tmp_path / "runs").exists()
    assert "train.ema" in one_error_line(cli("run", "--max-steps", "1", "--set", "train.ema=1.5", "--runs-dir", "runs", cwd=tmp_path))
