"""`mmreg search` through the real executable: plugin choices, conditional parameters, continuation,
failures as data, impossible draws pruned before any weight, and pruning that stops bad trials early."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PLUGIN = str(Path(__file__).with_name("search_plugin.py"))

# A whole trial in a few seconds on a CPU: tiny CLIP, 3 steps, 32 training samples.
TINY = """
[encoder]
name = "clip"
hidden_size = 32
projection_dim = 32

[dataset]
name = "shapes"
train_size = 32
val_size = 16

[model]
dim = 32

[train]
max_steps = 3
batch_size = 8
eval_batch_size = 16
device = "cpu"
"""


def mmreg(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    return subprocess.run([sys.executable, "-m", "mmreg", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def search(where: Path, space: str, *args: str, base: str = TINY, plugin: bool = False) -> dict:
    (where / "s.toml").write_text(base + "\n[search]\n" + space)
    result = mmreg(*(["--plugin", PLUGIN] if plugin else []), "search", "s.toml", "--json", *args, cwd=where)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_plugin_choices_with_a_conditional_parameter_and_the_best_reruns(tmp_path):
    space = 'fusion = ["none", "gated", "cross-attention"]\n"fusion.heads" = {choices = [2, 4]}\n"train.lr" = {}\n'
    base = "seed = 4  # TPE's first draws under this seed hold every fusion\n" + TINY
    summary = search(tmp_path, space, "--trials", "6", base=base)
    assert summary["trials"] == 6 and not summary["interrupted"]
    rows = summary["rows"]
    assert {r["state"] for r in rows} <= {"complete", "pruned"} and summary["states"]["complete"] >= 2
    fusions = {r["params"]["fusion"] for r in rows}
    assert "none" in fusions and fusions & {"gated", "cross-attention"}
    for r in rows:  # heads is drawn exactly when the drawn fusion has it
        assert ("fusion.heads" in r["params"]) == (r["params"]["fusion"] != "none"), r
        assert 1e-5 <= r["params"]["train.lr"] <= 1e-2  # the core's declared default range
        config = (Path(r["run_dir"]) / "config.toml").read_text()
        assert f'name = "{r["params"]["fusion"]}"' in config
    study = Path(summary["study_dir"])
    assert study == tmp_path / "runs" / "s" and (study / "study.journal").is_file()
    for name in ("history", "importances", "intermediate"):
        assert (study / f"{name}.png").stat().st_size > 1000, summary["plots"]
    best = summary["best"]
    rerun = mmreg("run", best["experiment"], "--json", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads(rerun.stdout)["metrics"]["recall@1"] == best["value"]

    again = search(tmp_path, space, "--trials", "2", base=base)  # the same command continues the study
    assert again["trials"] == 8 and [r["number"] for r in again["rows"]] == list(range(8))


def test_a_raising_trial_fails_an_impossible_draw_is_pruned_and_the_rest_complete(tmp_path):
    summary = search(tmp_path, 'loss = ["boom", "multiview", "infonce"]\n', "--trials", "3", "--sampler", "grid", plugin=True)
    by_loss = {r["params"]["loss"]: r for r in summary["rows"]}
    assert by_loss["boom"]["state"] == "fail" and "boom: this loss always raises" in by_loss["boom"]["reason"]
    impossible = by_loss["multiview"]
    assert impossible["state"] == "pruned" and "needs two augmented views" in impossible["reason"]
    assert not Path(impossible["run_dir"] or tmp_path / "runs" / "s" / "trials" / f"trial-{impossible['number']:04d}").exists()
    assert by_loss["infonce"]["state"] == "complete" and summary["best"]["number"] == by_loss["infonce"]["number"]


def test_a_search_whose_every_trial_failed_exits_1_naming_the_first_reason(tmp_path):
    (tmp_path / "s.toml").write_text(TINY + '\n[search]\nloss = ["boom"]\n')
    result = mmreg("--plugin", PLUGIN, "search", "s.toml", "--trials", "1", cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "1 trials (1 fail)" in result.stdout and "no trial completed; trial 0 failed: RuntimeError: boom" in " ".join(result.stdout.split())


def test_pruning_stops_clearly_bad_trials_early(tmp_path):
    base = TINY.replace("max_steps = 3", "max_steps = 4\neval_every = 1")
    space = 'fusion = ["none", "constant"]\nseed = [0, 1, 2]\n'  # a constant scorer has recall 0 at every evaluation
    summary = search(tmp_path, space, "--trials", "6", "--sampler", "grid", "--metric", "recall@5", plugin=True, base=base)
    pruned = [r for r in summary["rows"] if r["state"] == "pruned"]
    assert any(r["params"]["fusion"] == "constant" and r["steps"] < 4 for r in pruned), summary["rows"]
    for r in pruned:
        record = json.loads((Path(r["run_dir"]) / "pruned.json").read_text())
        assert record["step"] == r["steps"] and "MedianPruner" in record["reason"]
        assert not (Path(r["run_dir"]) / "summary.json").exists()
    assert summary["best"]["params"]["fusion"] == "none"


def test_python_api_with_two_worker_processes_sharing_the_trials(tmp_path):
    import mmreg

    (tmp_path / "s.toml").write_text(TINY + '\n[search]\n"train.lr" = {low = 1e-4, high = 1e-2, log = true}\n')
    seen = []
    summary = mmreg.search(tmp_path / "s.toml", trials=2, jobs=2, pruner="none", runs_dir=tmp_path / "runs", on_trial=seen.append)
    assert summary["trials"] == 2 and summary["states"] == {"complete": 2}
    assert sorted(r["number"] for r in seen) == [0, 1]  # reported live from the workers' storage
    assert len({r["run_dir"] for r in summary["rows"]}) == 2 and Path(summary["best"]["experiment"]).is_file()
