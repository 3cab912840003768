"""What mattered in a search (parameter importances, the study's direction respected) and trials over
several seeds (`mmreg search --seeds`): one run directory per seed, the trial's value their mean."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from rich.console import Console
from test_search import TINY, mmreg, search

from mmreg.cli.search import _print_importances
from mmreg.search import param_importances

optuna.logging.set_verbosity(optuna.logging.ERROR)

UNIT = {"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0), "z": FloatDistribution(0.0, 1.0)}


def synthetic(direction: str, value: Callable[[dict[str, float]], float], trials: int = 60) -> optuna.Study:
    """An in-memory study of ``trials`` complete trials, x, y and z uniform in [0, 1], valued by ``value``."""
    study = optuna.create_study(direction=direction)
    draw = random.Random(0)
    for _ in range(trials):
        params = {name: draw.random() for name in UNIT}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=UNIT, value=value(params)))
    return study


def ranking(importances: dict) -> list[str]:
    return [row["name"] for row in importances["params"]]


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["better-high-when-maximised", "better-low-when-maximised"])
def test_the_one_parameter_that_decides_the_objective_ranks_first(direction, sign):
    importances = param_importances(synthetic(direction, lambda p: sign * p["x"]))
    assert ranking(importances)[0] == "x" and "PED-ANOVA" in importances["method"]
    rows = {row["name"]: row for row in importances["params"]}
    assert rows["x"]["ped_anova"] > 0.8 and rows["x"]["fanova"] > 0.8
    assert sum(r["ped_anova"] for r in rows.values()) == pytest.approx(1.0)
    assert param_importances(synthetic(direction, lambda p: sign * p["x"])) == importances  # seeded: the same every time


def test_the_direction_decides_which_parameter_mattered():
    # The best trials (highest) are those with x above 0.9; the worst (lowest) those with y below 0.1.
    def value(p: dict[str, float]) -> float:
        return 10.0 * (p["x"] > 0.9) - 10.0 * (p["y"] < 0.1) + 0.01 * p["z"]

    maximised, minimised = param_importances(synthetic("maximize", value)), param_importances(synthetic("minimize", value))
    assert ranking(maximised)[0] == "x" and ranking(minimised)[0] == "y"
    fanova = [{r["name"]: r["fanova"] for r in i["params"]} for i in (maximised, minimised)]
    assert fanova[0] == fanova[1]  # fANOVA explains variance, which has no direction: the second column only


def test_a_conditional_parameter_is_ranked_by_ped_anova_alone():
    study = optuna.create_study(direction="maximize")
    draw = random.Random(0)
    for _ in range(40):
        fusion = draw.choice(["none", "gated"])
        params = {"fusion": fusion, "x": draw.random(), **({"heads": draw.choice([2, 4])} if fusion == "gated" else {})}
        dists = {"fusion": CategoricalDistribution(["none", "gated"]), "x": UNIT["x"], "heads": CategoricalDistribution([2, 4])}
        study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params}, value=params["x"]))
    rows = {r["name"]: r for r in param_importances(study)["params"]}
    assert ranking(param_importances(study))[0] == "x" and rows["heads"]["fanova"] is None and rows["fusion"]["fanova"] is not None


def test_no_importances_from_one_complete_trial_or_one_parameter_with_the_reason():
    one = synthetic("maximize", lambda p: p["x"], trials=1)
    assert param_importances(one) == {"params": [], "reason": "1 complete trial(s) with a finite value; importances need at least 2"}
    alone = optuna.create_study()
    for x in (0.1, 0.5, 0.9):
        alone.add_trial(optuna.trial.create_trial(params={"x": x}, distributions={"x": UNIT["x"]}, value=x))
    reason = param_importances(alone)
    assert reason["params"] == [] and "vary 1 parameter(s) (x)" in reason["reason"]


def test_the_importances_table_lists_parameters_in_ranking_order_or_says_why_not():
    console = Console(record=True, width=120)
    _print_importances(console, param_importances(synthetic("maximize", lambda p: p["y"])))
    _print_importances(console, {"params": [], "reason": "0 complete trial(s)"})
    text = console.export_text()
    assert "PED-ANOVA" in text and "fANOVA" in text and text.index("│ y") < text.index("│ x")
    assert "no parameter importances: 0 complete trial(s)" in text


def test_each_trial_runs_once_per_seed_and_its_value_is_their_mean(tmp_path):
    space = 'fusion = ["none", "gated"]\n"train.lr" = {low = 1e-4, high = 1e-2, log = true}\n'
    summary = search(tmp_path, space, "--trials", "2", "--seeds", "0,1", "--pruner", "none")
    assert summary["states"] == {"complete": 2}
    for row in summary["rows"]:
        assert row["seeds"] == [0, 1] and len(row["run_dirs"]) == 2 and row["run_dir"] == row["run_dirs"][0]
        best = []
        for seed, run_dir in zip([0, 1], row["run_dirs"], strict=True):
            run = Path(run_dir)
            assert run.name == f"trial-{row['number']:04d}-seed-{seed}" and run.parent == tmp_path / "runs" / "s" / "trials"
            assert f"seed = {seed}\n" in (run / "config.toml").read_text()
            best.append(json.loads((run / "summary.json").read_text())["best"]["value"])
        assert row["values"] == best and row["value"] == pytest.approx(sum(best) / 2)
    assert summary["best"]["seeds"] == [0, 1]
    assert {r["name"] for r in summary["importances"]["params"]} == {"fusion", "train.lr"}
    assert json.loads((tmp_path / "runs" / "s" / "summary.json").read_text())["importances"] == summary["importances"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--seeds", "1,1"], "names seed 1 twice"),
        (["--seeds", "x"], "'x' is not a seed"),
        (["--seeds", "0", "--repeat", "2"], "give --seeds or --repeat, not both"),
        (["--repeat", "0"], "run at least once"),
    ],
)
def test_bad_seeds_exit_2_in_one_line_before_any_study_exists(tmp_path, args, says):
    (tmp_path / "s.toml").write_text(TINY + '\n[search]\nfusion = ["none", "gated"]\n')
    result = mmreg("search", "s.toml", "--trials", "1", *args, cwd=tmp_path)
    assert result.returncode == 2 and says in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "runs").exists()


def test_seeds_with_a_searched_seed_are_refused(tmp_path):
    (tmp_path / "s.toml").write_text(TINY + "\n[search]\nseed = [0, 1]\n")
    result = mmreg("search", "s.toml", "--repeat", "2", cwd=tmp_path)
    assert result.returncode == 2 and "searches seed" in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


def test_repeat_counts_from_the_experiments_seed_and_workers_plan_the_same_seeds(tmp_path):
    from mmreg.search import plan_search

    (tmp_path / "s.toml").write_text("seed = 7\n" + TINY + '\n[search]\nfusion = ["none", "gated"]\n')
    plan = plan_search(tmp_path / "s.toml", repeat=2, runs_dir=tmp_path / "runs")
    assert plan.seeds == [7, 8] and plan.settings["seeds"] == [7, 8]
    worker = plan_search(plan.experiment, **plan.settings)  # what each --jobs worker process plans
    assert worker.seeds == [7, 8]
    assert plan_search(tmp_path / "s.toml", seeds=[3, 1], runs_dir=tmp_path / "runs").seeds == [3, 1]
    from mmreg.errors import ConfigError

    with pytest.raises(ConfigError, match="names seed 1 twice"):
        plan_search(tmp_path / "s.toml", seeds=[1, 1], runs_dir=tmp_path / "other")
    assert not (tmp_path / "other").exists()
