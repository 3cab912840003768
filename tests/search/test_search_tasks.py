"""`mmreg search` over tasks beyond retrieval, with no --metric: every trial completes, the study
optimises the task's headline metric in its declared direction, and the pruner is fed that metric
at every evaluation (read back from the study) while the trial's value is the kept checkpoint's."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from test_search import TINY, search

from mmreg.search import open_storage

BASE = TINY.replace("max_steps = 3", "max_steps = 2\neval_every = 1")
TASKS = {
    "vqa": ('[task]\nname = "vqa"\n\n[fusion]\nname = "concat"\n\n[loss.bce]\n', "vqa_accuracy"),
    "captioning": ('[task]\nname = "captioning"\nmax_new_tokens = 4\n\n[fusion]\nname = "none"\n\n[loss.lm]\n', "cider"),
}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_a_search_optimises_the_task_headline_and_prunes_on_it(tmp_path, task):
    table, headline = TASKS[task]
    summary = search(tmp_path, '"train.lr" = {low = 1e-4, high = 1e-2, log = true}\n', "--trials", "2", base=table + BASE)
    assert summary["states"] == {"complete": 2}, summary["rows"]
    assert (summary["metric"], summary["direction"]) == (headline, "maximize")
    storage, _ = open_storage(None, Path(summary["study_dir"]), 10)
    study = optuna.load_study(study_name=summary["study"], storage=storage)
    for trial in study.trials:
        run_dir = Path(trial.user_attrs["run_dir"])
        lines = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        evaluations = {r["step"]: r[headline] for r in lines if r.get("split") == "val"}
        assert trial.user_attrs["metric"] == headline
        assert trial.intermediate_values == evaluations and len(evaluations) == 2  # the pruner saw each evaluation
        kept = json.loads((run_dir / "summary.json").read_text())["best"]
        assert kept["metric"] == headline and trial.value == kept["value"] == max(evaluations.values())
    assert summary["best"]["value"] == max(t.value for t in study.trials)


BLIP2 = """
[encoder]
name = "blip2"
hidden_size = 16
layers = 1
num_query_tokens = 2

[fusion]
name = "none"

[loss.lm]
label_smoothing = 0.0

[dataset]
name = "shapes"
train_size = 16
val_size = 8

[train]
max_steps = 2
eval_every = 1
batch_size = 8
eval_batch_size = 8
device = "cpu"
"""


def test_a_search_over_blip2s_own_parameters_answers_by_generation(tmp_path):
    """BLIP-2's language model writes the answers (task.answer auto); the space reaches its parameters."""
    space = '"encoder.train_vision" = {choices = [false, true]}\n"encoder.language_model" = {choices = ["opt", "t5"]}\n'
    summary = search(tmp_path, space, "--trials", "2", base='[task]\nname = "vqa"\nmax_new_tokens = 3\n' + BLIP2)
    assert summary["states"] == {"complete": 2}, summary["rows"]
    assert (summary["metric"], summary["direction"]) == ("vqa_accuracy", "maximize")
