"""The task owns its results: one resolved metric decides the best checkpoint, early stopping,
`mmreg search`'s objective and pruner and `mmreg runs list`, in the direction the task declares;
the summary keeps what the task describes; contracts are checked on the first batch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_cli import cli, one_error_line

import mmreg
from mmreg.errors import ConfigError
from mmreg.plugins import load_plugins
from mmreg.results import Metric, resolve_metric

PLUGIN = str(Path(__file__).with_name("results_plugin.py"))
TINY = {
    "seed": 1,
    "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32},
    "fusion": {"name": "none"},
    "model": {"dim": 32},
    "dataset": {"name": "shapes", "train_size": 32, "val_size": 16},
    "train": {"max_steps": 4, "batch_size": 8, "eval_batch_size": 16, "eval_every": 1, "device": "cpu"},
}
FLAGS = ["--set", "encoder.hidden_size=32", "--set", "encoder.projection_dim=32", "--set", "model.dim=32", "--fusion", "none",
         "--set", "dataset.train_size=16", "--set", "dataset.val_size=8", "--batch-size", "4", "--max-steps", "2", "--device", "cpu"]  # fmt: skip


def val_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("split") == "val"]


class Declared:
    def __init__(self, headline=None, lower=frozenset()):
        self.name, self.headline, self.lower_is_better = "t", headline, lower


class Names:
    def __init__(self, *names):
        self.names = names


def test_the_metric_is_the_request_else_the_headline_else_the_first_with_its_direction():
    evaluations = [Names("a", "b"), Names("loss")]
    assert resolve_metric(Declared(), evaluations) == Metric("a", True)
    assert resolve_metric(Declared("b"), evaluations) == Metric("b", True)
    assert resolve_metric(Declared("b", frozenset({"loss"})), evaluations, "loss") == Metric("loss", False)
    with pytest.raises(ConfigError, match="validation metric 'los' is not computed by task 't'; did you mean 'loss'"):
        resolve_metric(Declared(), evaluations, "los")
    with pytest.raises(ConfigError, match="declares headline metric 'c'"):
        resolve_metric(Declared("c"), evaluations)
    assert Metric("e", False).better(0.1, 0.2) and not Metric("e", False).better(0.2, 0.2) and Metric("e").better(0.3, 0.2)


def test_a_retrieval_run_keeps_the_checkpoint_with_the_highest_mean_recall_at_1(tmp_path):
    summary = mmreg.run({**TINY, "runs_dir": str(tmp_path)}, progress=False)
    records = val_records(Path(summary["run_dir"]))
    assert len(records) == 4
    best = max(records, key=lambda r: (r["recall@1"], -r["step"]))  # ties keep the earlier
    assert summary["best"] == {"metric": "recall@1", "higher_is_better": True, "value": best["recall@1"], "step": best["step"]}
    state = json.loads((Path(summary["run_dir"]) / "checkpoints" / "best" / "state.json").read_text())
    assert (state["metric"], state["higher_is_better"], state["step"], state["value"]) == ("recall@1", True, best["step"], best["recall@1"])


def test_a_lower_is_better_headline_keeps_the_lowest_and_the_summary_keeps_what_the_task_describes(tmp_path):
    exp = {**TINY, "runs_dir": str(tmp_path), "task": {"name": "lowest", "label": "given"}}
    summary = mmreg.run(exp, host=load_plugins([PLUGIN]), progress=False)
    errors = [(r["step"], r["error"]) for r in val_records(Path(summary["run_dir"]))]
    assert errors == [(1, 0.5), (2, 0.2), (3, 0.7), (4, 0.3)]
    assert summary["best"] == {"metric": "error", "higher_is_better": False, "value": 0.2, "step": 2}
    assert summary["lowest"] == {"label": "given", "classes": ["a", "b"], "evaluations": 4, "nested": {"ok": [1, 2.5, None]}}
    assert "chance@1" not in summary and "retrieval" not in summary
    written = json.loads((Path(summary["run_dir"]) / "summary.json").read_text())
    assert written["lowest"] == summary["lowest"]
    config = (Path(summary["run_dir"]) / "config.toml").read_text()
    assert '[task]\nname = "lowest"\nlabel = "given"' in config  # the task resolved, its parameters filled in
    listing = json.loads(cli("--plugin", PLUGIN, "runs", "list", "--runs-dir", str(tmp_path), "--json", cwd=tmp_path).stdout)
    assert listing[0]["headline"] == {"error": 0.2}


def test_train_metric_names_another_metric_and_its_direction_comes_from_the_task(tmp_path):
    exp = {**TINY, "runs_dir": str(tmp_path), "task": "lowest", "train": {**TINY["train"], "metric": "hits"}}
    summary = mmreg.run(exp, host=load_plugins([PLUGIN]), progress=False)
    assert summary["best"] == {"metric": "hits", "higher_is_better": True, "value": pytest.approx(0.8), "step": 2}
    bad = {**exp, "train": {**TINY["train"], "metric": "hit"}}
    with pytest.raises(ConfigError, match="'hit' is not computed by task 'lowest'; did you mean 'hits'"):
        mmreg.run(bad, host=load_plugins([PLUGIN]), progress=False)


@pytest.mark.parametrize(
    ("flags", "component", "contract"),
    [
        (["--loss", "vector"], "loss 'vector' (plugin 'results_plugin')", "a loss gives a scalar"),
        (["--task", "bad-targets"], "task 'bad-targets' (plugin 'results_plugin')", "targets give one row per sample"),
    ],
)
def test_a_broken_contract_is_exit_2_before_any_run_directory(tmp_path, flags, component, contract):
    line = one_error_line(cli("--plugin", PLUGIN, "run", *FLAGS, *flags, "--runs-dir", "runs", cwd=tmp_path))
    assert component in line and f"breaks the contract '{contract}'" in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_task_parameters_are_validated_against_the_task_schema(tmp_path):
    line = one_error_line(cli("--plugin", PLUGIN, "run", *FLAGS, "--task", "lowest", "--set", "task.labl=y", cwd=tmp_path))
    assert "labl" in line and "label" in line
    line = one_error_line(cli("run", *FLAGS, "--set", "task.shortlist=0", cwd=tmp_path))
    assert "shortlist" in line


def test_the_first_batch_check_leaves_the_run_as_it_would_have_been(tmp_path):
    """The same experiment run twice gives identical metrics: the check draws from no generator the run uses."""
    exp = {**TINY, "train": {**TINY["train"], "max_steps": 2}}
    first = mmreg.run({**exp, "runs_dir": str(tmp_path / "a")}, progress=False)
    again = mmreg.run({**exp, "runs_dir": str(tmp_path / "b")}, progress=False)
    assert first["metrics"] == again["metrics"] and math.isfinite(first["final_loss"]) and first["final_loss"] == again["final_loss"]
