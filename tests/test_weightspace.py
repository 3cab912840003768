"""WiSE-FT and model soups (mmreg.weightspace): exact interpolation ends, the uniform soup as the mean
of the weights, the greedy soup never below its best ingredient, derived runs read like any run,
mismatched runs refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_cli import cli, one_error_line

import mmreg
from mmreg.history import load_run, rebuild_start
from mmreg.weightspace import snapshot, soup, wise

TINY = {
    "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32, "layers": 1},
    "fusion": {"name": "none"},
    "dataset": {"name": "shapes", "train_size": 32, "val_size": 16, "image_size": 32},
    "model": {"dim": 32},
    "train": {"batch_size": 8, "eval_batch_size": 16, "lr": 3e-3, "max_steps": 4, "device": "cpu"},
    "eval_sets": {"noisy": {"set": ["dataset.noise=60"]}},
}


def saved(run_dir: str | Path) -> dict[str, torch.Tensor]:
    return load_file(Path(run_dir) / "model.safetensors")


def test_interpolation_ends_are_exact_and_the_middle_is_the_mean(tmp_path):
    run = Path(mmreg.run({**TINY, "runs_dir": str(tmp_path)}, progress=False)["run_dir"])
    start = snapshot(rebuild_start(run).model)
    fine = load_file(run / "checkpoints" / "best" / "model.safetensors")
    written = {a: wise(run, alphas=[0, 0.5, 1], alpha=a, name=f"a{a:g}", device="cpu", plot=a == 0.5) for a in (0, 0.5, 1)}
    zero, half, one = (saved(written[a]["run_dir"]) for a in (0, 0.5, 1))
    assert all(torch.equal(zero[k], start[k]) for k in zero) and all(torch.equal(one[k], fine[k]) for k in one)
    assert all(torch.allclose(half[k], (start[k] + fine[k]) / 2) for k in half if half[k].is_floating_point())
    rows = written[0.5]["rows"]
    assert [r["alpha"] for r in rows] == [0, 0.5, 1] and {"recall@1", "noisy/recall@1"} <= set(rows[0])
    summary = json.loads((Path(written[0.5]["run_dir"]) / "summary.json").read_text())
    assert summary["wise"]["alpha"] == 0.5 and summary["wise"]["parents"]["checkpoint"] == "best"
    assert (Path(written[0.5]["run_dir"]) / "wise.png").stat().st_size > 10_000
    evaluated = json.loads(cli("eval", written[0.5]["run_dir"], "--device", "cpu", "--json", cwd=tmp_path).stdout)  # a run like any
    assert evaluated["recall@1"] == pytest.approx(rows[1]["recall@1"]) and evaluated["noisy/recall@1"] == pytest.approx(rows[1]["noisy/recall@1"])


def test_soups_uniform_is_the_mean_and_greedy_never_below_its_best_ingredient(tmp_path):
    # one starting point (the seed also draws the data, and with it a tiny tokenizer's vocabulary), three learning rates
    runs = [mmreg.run({**TINY, "train": {**TINY["train"], "lr": lr}, "runs_dir": str(tmp_path)}, progress=False)["run_dir"] for lr in (3e-3, 1e-3, 5e-4)]
    greedy = soup(runs, name="greedy", device="cpu")
    best = max(row["recall@1"] for row in greedy["ingredients"])
    assert greedy["greedy"]["recall@1"] >= best and greedy["kept"][0] == max(greedy["ingredients"], key=lambda r: r["recall@1"])["run"]
    uniform = soup(runs, greedy=False, name="uniform", device="cpu")
    ingredients = [load_file(Path(r) / "checkpoints" / "best" / "model.safetensors") for r in runs]
    mean = saved(uniform["run_dir"])
    assert all(torch.allclose(mean[k], sum(i[k] for i in ingredients) / 3) for k in mean if mean[k].is_floating_point())
    recorded = json.loads((Path(greedy["run_dir"]) / "summary.json").read_text())["soup"]
    assert recorded["kept"] == greedy["kept"] and len(recorded["ingredients"]) == 3


def test_runs_that_do_not_correspond_are_refused_in_one_line(tmp_path):
    small = mmreg.run({**TINY, "runs_dir": str(tmp_path), "name": "small"}, progress=False)["run_dir"]
    wider = {**TINY, "runs_dir": str(tmp_path), "name": "wider", "model": {"dim": 16}}
    other = mmreg.run(wider, progress=False)["run_dir"]
    line = one_error_line(cli("soup", small, other, "--device", "cpu", cwd=tmp_path))
    assert "give runs of one architecture" in line and "wider" in line
    assert "at least two runs" in one_error_line(cli("soup", small, "--device", "cpu", cwd=tmp_path))
    assert "in [0, 1]" in one_error_line(cli("wise", small, "--alphas", "0,1.5", "--device", "cpu", cwd=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["small", "wider"]  # nothing written


def test_peft_runs_mix_their_merged_weights_and_write_a_full_run(tmp_path):
    lora = {**TINY, "peft": {"name": "lora"}, "runs_dir": str(tmp_path), "name": "lora"}
    run = Path(mmreg.run(lora, progress=False)["run_dir"])
    result = wise(run, alphas=[0, 1], alpha=1, device="cpu", plot=False)
    derived = Path(result["run_dir"])
    assert load_run(derived).config["peft"] == {"name": "full"}  # the adapters are folded into the weights
    assert not any("lora_" in k for k in saved(derived))
    evaluated = json.loads(cli("eval", str(derived), "--device", "cpu", "--json", cwd=tmp_path).stdout)
    run_eval = json.loads(cli("eval", str(run), "--device", "cpu", "--json", cwd=tmp_path).stdout)
    assert evaluated["recall@1"] == pytest.approx(run_eval["recall@1"], abs=1e-6)  # α = 1: the run's own merged weights
