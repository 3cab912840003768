"""[eval_sets.NAME]: extra evaluation sets scored at every evaluation beside the validation split,
recorded as NAME/METRIC in metrics.jsonl, summary.json, trackers, curves.png and mmreg eval; a set's
metric may decide the best checkpoint; bad sets are refused in one line before the run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import cli, one_error_line

EXPERIMENT = """
[encoder]
hidden_size = 32
layers = 1
projection_dim = 32
[fusion]
name = "none"
[model]
dim = 32
[dataset]
train_size = 32
val_size = 16
image_size = 32
[train]
max_steps = 4
eval_every = 2
batch_size = 8
eval_batch_size = 16
device = "cpu"
[eval_sets.noisy]
set = ["dataset.noise=60"]
[eval_sets.kinds]
task = "zeroshot"
set = ["task.templates=simple"]
"""


def test_two_sets_are_recorded_in_every_output(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (tmp_path / "e.toml").write_text(EXPERIMENT)
    result = cli("run", "e.toml", "--name", "r", "--runs-dir", "runs", "--track", "tensorboard", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert {"recall@1", "noisy/recall@1", "kinds/acc1", "kinds/mean_per_class_recall"} <= set(summary["metrics"])
    assert summary["best"]["metric"] == "recall@1"  # the run's own headline still decides
    run = tmp_path / "runs" / "r"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "val" and "noisy/recall@1" in r and "kinds/acc1" in r] == [2, 4]
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert {"val/noisy/recall@1", "val/kinds/acc1"} <= set(events.Tags()["scalars"])
    assert (run / "curves.png").stat().st_size > 10_000
    evaluated = json.loads(cli("eval", "r", "--runs-dir", "runs", "--checkpoint", "last", "--device", "cpu", "--json", cwd=tmp_path).stdout)
    final = [r for r in rows if r["split"] == "val"][-1]
    assert evaluated["noisy/recall@1"] == pytest.approx(final["noisy/recall@1"]) and evaluated["kinds/acc1"] == pytest.approx(final["kinds/acc1"])


def test_a_sets_metric_can_decide_the_best_checkpoint(tmp_path):
    (tmp_path / "e.toml").write_text(EXPERIMENT)
    result = cli("run", "e.toml", "--set", "train.metric=kinds/acc1", "--runs-dir", "runs", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    best = json.loads(result.stdout)["best"]
    assert best["metric"] == "kinds/acc1" and best["higher_is_better"] is True


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ('[eval_sets.bad]\ndataset = "nowhere"\n', "eval_sets.bad: "),
        ('[eval_sets.bad]\nset = ["train.lr=1"]\n', "eval_sets.bad: --set train.lr=1"),
        ('[eval_sets."a/b"]\nset = []\n', "eval_sets.a/b: a set's name becomes its metrics' prefix"),
        ('[eval_sets.bad]\ntask = "classification"\n', "eval_sets.bad: "),
    ],
    ids=["unknown-dataset", "not-task-or-dataset", "slash-in-name", "task-with-a-head"],
)
def test_bad_sets_are_refused_in_one_line_before_the_run_directory(tmp_path, extra, says):
    (tmp_path / "e.toml").write_text(EXPERIMENT + extra)
    line = one_error_line(cli("run", "e.toml", "--runs-dir", "runs", cwd=tmp_path))
    assert says in line
    assert not (tmp_path / "runs").exists()


def test_a_metric_no_set_computes_is_refused_naming_what_they_do(tmp_path):
    (tmp_path / "e.toml").write_text(EXPERIMENT)
    line = one_error_line(cli("run", "e.toml", "--set", "train.metric=kinds/recall@1", "--runs-dir", "runs", cwd=tmp_path))
    assert "'kinds/recall@1' is not computed" in line and "kinds/acc1" in line
    assert not Path(tmp_path / "runs").exists()


def test_a_zero_shot_set_beside_head_only_losses_is_refused_and_beside_a_contrastive_one_runs(tmp_path):
    classifier = EXPERIMENT.replace('[fusion]', '[task]\nname = "classification"\n[loss.ce]\n[fusion]')
    (tmp_path / "e.toml").write_text(classifier)
    line = one_error_line(cli("run", "e.toml", "--runs-dir", "runs", cwd=tmp_path))
    assert "eval_sets.kinds: task 'zeroshot' scores the fusion's shared space" in line and "(ce)" in line
    (tmp_path / "e.toml").write_text(classifier.replace("[loss.ce]", "[loss.ce]\n[loss.infonce]\nweight = 0.5"))
    result = cli("run", "e.toml", "--runs-dir", "runs", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {"accuracy", "kinds/acc1", "noisy/accuracy"} <= set(json.loads(result.stdout)["metrics"])
