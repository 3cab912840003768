"""Whole runs through the Python API, `mmreg.run(...)`, with tiny settings on the CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, load_model

import mmreg
from mmreg.api import collate_for, prepare, resolve
from mmreg.config import Experiment, load_experiment, validate
from mmreg.data import make_loader
from mmreg.plugins import load_plugins
from mmreg.train import evaluate

RECALLS = [f"{side}recall@{k}" for k in (1, 5, 10) for side in ("i2t_", "t2i_", "")]


def tiny(runs_dir: Path, fusion: str, name: str, seed: int = 0) -> dict:
    """An experiment in the file layout: a 32-wide CLIP, 32 training pairs, 3 steps."""
    return {
        "name": name,
        "seed": seed,
        "runs_dir": str(runs_dir),
        "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32},
        "fusion": {"name": fusion},
        "dataset": {"name": "shapes", "train_size": 32, "val_size": 16},
        "model": {"dim": 32},
        "train": {"max_steps": 3, "batch_size": 8, "eval_batch_size": 16, "device": "cpu"},
    }


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def gated(runs_dir) -> tuple[dict, dict]:
    """(the experiment dict, the summary) of one gated run, started from a plain dict."""
    exp = tiny(runs_dir, "gated", "gated")
    return exp, mmreg.run(exp, progress=False)


@pytest.fixture(scope="module")
def dual(runs_dir) -> tuple[Experiment, dict]:
    """(the Experiment, the summary) of one `none` (dual encoder) run, started from an Experiment."""
    exp = load_experiment(
        None,
        {"encoder": "clip", "fusion": "none", "dataset": "shapes", "max_steps": 3, "batch_size": 8, "device": "cpu",
         "runs_dir": str(runs_dir), "name": "dual"},
        ["dataset.train_size=32", "dataset.val_size=16", "train.eval_batch_size=16",
         "encoder.hidden_size=32", "encoder.projection_dim=32", "model.dim=32"],
    )  # fmt: skip
    assert isinstance(exp, Experiment)
    return exp, mmreg.run(exp, progress=False)


def check_summary(summary: dict, run_dir: Path) -> None:
    assert Path(summary["run_dir"]) == run_dir
    assert summary["task"] == "retrieval"
    assert (summary["val_size"], summary["train_size"], summary["steps"]) == (16, 32, 3)
    assert summary["retrieval"]["chance@1"] == pytest.approx(1 / 16)  # the task's own account, under its name
    assert summary["best"]["metric"] == "recall@1" and summary["best"]["higher_is_better"] is True
    assert summary["epochs"] == pytest.approx(3 * 8 / 32)
    assert summary["device"] == "cpu"
    assert math.isfinite(summary["final_loss"]) and summary["final_loss"] > 0
    assert summary["parameters"] >= summary["trainable_parameters"] > 0
    m = summary["metrics"]
    assert set(RECALLS) <= set(m)
    for key in RECALLS:
        assert 0.0 <= m[key] <= 1.0
    for k in (1, 5, 10):
        assert m[f"recall@{k}"] == pytest.approx((m[f"i2t_recall@{k}"] + m[f"t2i_recall@{k}"]) / 2)
    assert m["recall@1"] <= m["recall@5"] <= m["recall@10"]
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    for name in ("config.toml", "metrics.jsonl", "versions.json", "model.safetensors"):
        assert (run_dir / name).is_file()


def test_gated_run_from_a_dict(gated, runs_dir):
    _, summary = gated
    check_summary(summary, runs_dir / "gated")


def test_none_run_from_an_experiment(dual, runs_dir):
    _, summary = dual
    check_summary(summary, runs_dir / "dual")


def test_the_two_fusions_build_different_models(gated, dual):
    # `none` has no fusion weights and projects pooled vectors; `gated` adds attention blocks.
    assert gated[1]["parameters"] > dual[1]["parameters"]


@pytest.mark.parametrize("which", ["gated", "dual"])
def test_saved_config_reloads_as_the_resolved_experiment(which, gated, dual, runs_dir):
    exp, summary = {"gated": gated, "dual": dual}[which]
    exp = exp if isinstance(exp, Experiment) else validate(exp)
    host = load_plugins()
    expected = resolve(exp, host).model_dump()
    expected["train"]["precision"] = "fp32"  # `auto` is saved as what it stood for on this device (the CPU)
    reloaded = load_experiment(Path(summary["run_dir"]) / "config.toml")
    assert reloaded.name == which and reloaded.train.max_steps == 3 and reloaded.model.dim == 32
    # TOML has no null, so parameters left at None (encoder.pretrained) are not written;
    # resolving fills them back in from the schema's defaults.
    assert resolve(reloaded, host).model_dump() == expected
    assert resolve(load_experiment(summary["run_dir"]), host).model_dump() == expected  # the run directory itself


def test_same_seed_same_result_new_directory(gated, runs_dir):
    exp, first = gated
    second = mmreg.run(exp, progress=False)
    assert second["run_dir"] != first["run_dir"]  # the same name never overwrites
    assert Path(second["run_dir"]).parent == runs_dir
    assert second["metrics"] == first["metrics"]
    assert second["final_loss"] == first["final_loss"]
    assert json.loads((runs_dir / "gated" / "summary.json").read_text()) == first


def test_another_seed_trains_differently(runs_dir, gated):
    other = mmreg.run(tiny(runs_dir, "gated", "gated-seed1", seed=1), progress=False)
    assert other["final_loss"] != gated[1]["final_loss"]


def rebuild(exp: Experiment):
    """The model and validation loader of a resolved experiment, built as `mmreg.run` builds them."""
    p = prepare(exp, load_plugins())
    return p.model, make_loader(p.val_split, collate_for(p), exp.train.eval_batch_size, shuffle=False, seed=exp.seed)


@pytest.mark.parametrize("which", ["gated", "dual"])
def test_weights_load_back_into_a_fresh_model(which, gated, dual):
    _, summary = {"gated": gated, "dual": dual}[which]
    run_dir = Path(summary["run_dir"])
    saved = load_file(run_dir / "model.safetensors")
    model, loader = rebuild(load_experiment(run_dir / "config.toml"))
    state = model.state_dict()
    assert set(saved) <= set(state)
    assert all(saved[k].shape == state[k].shape for k in saved)
    # Training moved the weights away from the (identically seeded) initialisation...
    assert any(not torch.equal(saved[k], state[k]) for k in saved)

    missing, unexpected = load_model(model, run_dir / "model.safetensors", strict=True)
    assert not missing and not unexpected
    state = model.state_dict()
    assert all(torch.equal(saved[k], state[k]) for k in saved)
    # ...and the reloaded model scores the validation split exactly as the run did.
    assert evaluate(model, loader, torch.device("cpu")) == pytest.approx(summary["metrics"])
