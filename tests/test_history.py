"""Past runs: `mmreg.history` (find, load, compare, re-evaluate) and `mmreg runs ...` / `mmreg eval`.

Two tiny real runs are trained once for the module: `gated` (gated fusion, lr 1e-3)
and `dual` (no fusion, lr 3e-3); beside them sit a run that never finished (no
summary.json) and a directory that is not a run (no config.toml).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mmreg
from mmreg.errors import ConfigError
from mmreg.history import config_differences, evaluate_run, find_runs, flatten, load_run, weights_for

GATED_PARAMS = {"fusion.heads", "fusion.layers", "fusion.dropout", "fusion.ffn_mult"}


def tiny(runs_dir: Path, name: str, fusion: str, lr: float) -> dict:
    return {
        "name": name,
        "runs_dir": str(runs_dir),
        "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32},
        "fusion": {"name": fusion},
        "dataset": {"name": "shapes", "train_size": 32, "val_size": 16},
        "model": {"dim": 32},
        "train": {"max_steps": 3, "batch_size": 8, "eval_batch_size": 16, "device": "cpu", "lr": lr},
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """{name: summary} of the two real runs; runs_dir holds them and the two decoys."""
    runs_dir = tmp_path_factory.mktemp("work") / "runs"
    out = {
        "gated": mmreg.run(tiny(runs_dir, "gated", "gated", 1e-3), progress=False),
        "dual": mmreg.run(tiny(runs_dir, "dual", "none", 3e-3), progress=False),
    }
    unfinished = runs_dir / "unfinished"
    unfinished.mkdir()
    shutil.copy(runs_dir / "gated" / "config.toml", unfinished / "config.toml")
    (unfinished / "metrics.jsonl").write_text('{"step": 1, "epoch": 0, "split": "train", "loss": 2.0, "lr": 0.001}\n')
    (runs_dir / "scratch").mkdir()
    (runs_dir / "scratch" / "notes.txt").write_text("not a run\n")
    return out


@pytest.fixture(scope="module")
def runs_dir(runs) -> Path:
    return Path(runs["gated"]["run_dir"]).parent


def cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    env["COLUMNS"] = "200"
    return subprocess.run([sys.executable, "-m", "mmreg", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def ok_json(result: subprocess.CompletedProcess[str]):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# -- the Python API ------------------------------------------------------------


def test_find_runs_lists_runs_and_marks_the_unfinished(runs, runs_dir):
    records = {r.name: r for r in find_runs(runs_dir)}
    assert set(records) == {"gated", "dual", "unfinished"}  # scratch has no config.toml
    gated, dual, unfinished = records["gated"], records["dual"], records["unfinished"]
    assert (gated.status, dual.status, unfinished.status) == ("complete", "complete", "incomplete")
    assert (gated.encoder, gated.fusion, gated.losses, gated.task) == ("clip", "gated", ["infonce"], "retrieval")
    assert dual.fusion == "none"
    assert gated.metrics == runs["gated"]["metrics"]
    assert gated.headline == {"recall@1": runs["gated"]["metrics"]["recall@1"]}
    assert gated.steps == 3 and unfinished.steps is None and unfinished.metrics == {}
    assert gated.created <= dual.created
    assert json.loads(json.dumps(unfinished.to_dict()))["status"] == "incomplete"
    assert find_runs(runs_dir / "missing") == []


def test_load_run_by_name_or_path_and_unknown_names(runs, runs_dir):
    assert load_run("dual", runs_dir).path == runs_dir / "dual"
    assert load_run(runs_dir / "dual", "elsewhere").name == "dual"
    assert load_run(runs_dir / "dual" / "config.toml", "elsewhere").name == "dual"
    with pytest.raises(ConfigError, match=r"unknown run 'gatde'.*did you mean 'gated'") as info:
        load_run("gatde", runs_dir)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="not a run directory"):
        load_run("scratch", runs_dir)


def test_config_differences_are_exactly_the_keys_that_differ(runs, runs_dir):
    diff = config_differences(["gated", "dual"], runs_dir)
    assert set(diff) == {"fusion.name", "train.lr"} | GATED_PARAMS
    assert diff["fusion.name"] == ["gated", "none"]
    assert diff["train.lr"] == [1e-3, 3e-3]
    assert diff["fusion.heads"] == [4, None]
    assert config_differences(["gated", "unfinished"], runs_dir) == {}  # same config, names ignored
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}


def test_evaluate_run_on_the_final_weights_reproduces_the_summary(runs, runs_dir):
    for name, summary in runs.items():
        result = evaluate_run(runs_dir / name, checkpoint="final", device="cpu")
        assert (result["split"], result["checkpoint"], result["size"]) == ("val", "final", summary["val_size"])
        assert {k: result[k] for k in summary["metrics"]} == pytest.approx(summary["metrics"])


def test_evaluate_run_on_the_best_checkpoint_reproduces_its_record(runs, runs_dir):
    best = runs_dir / "gated" / "checkpoints" / "best"
    if not (best / "state.json").is_file():
        pytest.skip("this core writes no best checkpoint")
    recorded = json.loads((best / "state.json").read_text())["metrics"]
    result = evaluate_run("gated", device="cpu", runs_dir=runs_dir)  # checkpoint="best" by default
    assert (result["checkpoint"], result["weights"]) == ("best", str(best / "model.safetensors"))
    assert {k: result[k] for k in recorded} == pytest.approx(recorded)


def test_evaluate_run_on_the_training_split(runs, runs_dir):
    result = evaluate_run("dual", split="train", checkpoint="final", device="cpu", runs_dir=runs_dir)
    assert (result["split"], result["size"]) == ("train", runs["dual"]["train_size"])
    assert 0.0 <= result["recall@1"] <= result["recall@5"] <= 1.0


def test_evaluate_run_without_weights_names_the_file(runs, runs_dir):
    with pytest.raises(ConfigError, match="model.safetensors"):
        evaluate_run("unfinished", checkpoint="final", runs_dir=runs_dir)
    with pytest.raises(ConfigError, match="unknown split 'test'"):
        evaluate_run("gated", split="test", runs_dir=runs_dir)


def test_checkpoint_choice_and_fallback(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    with pytest.raises(ConfigError, match=r"model\.safetensors"):
        weights_for(run, "best")
    (run / "model.safetensors").write_bytes(b"x")
    assert weights_for(run, "best") == (run / "model.safetensors", "final")  # no checkpoints: the final weights
    assert weights_for(run, "last") == (run / "model.safetensors", "final")
    (run / "checkpoints" / "best").mkdir(parents=True)
    (run / "checkpoints" / "best" / "model.safetensors").write_bytes(b"x")
    assert weights_for(run, "best") == (run / "checkpoints" / "best" / "model.safetensors", "best")
    assert weights_for(run, "final") == (run / "model.safetensors", "final")
    with pytest.raises(ConfigError, match=r"checkpoints/last/model\.safetensors"):
        weights_for(run, "last")  # checkpoints exist, that one does not: no silent fallback
    with pytest.raises(ConfigError, match="did you mean 'best'"):
        weights_for(run, "bset")


# -- the command line ----------------------------------------------------------


def test_cli_runs_list_show_compare(runs, runs_dir):
    cwd = runs_dir.parent
    listed = {r["name"]: r for r in ok_json(cli("runs", "list", "--json", cwd=cwd))}
    assert set(listed) == {"gated", "dual", "unfinished"}
    assert listed["unfinished"]["status"] == "incomplete"
    assert listed["gated"]["metrics"] == runs["gated"]["metrics"]
    assert listed["dual"]["fusion"] == "none"

    shown = ok_json(cli("runs", "show", "gated", "--json", cwd=cwd))
    assert shown["summary"] == runs["gated"] and shown["config"]["fusion"]["name"] == "gated"
    files = {f["path"]: f["size"] for f in shown["files"]}
    assert files["model.safetensors"] > 0 and {"config.toml", "summary.json", "metrics.jsonl"} <= set(files)

    compared = ok_json(cli("runs", "compare", "gated", "dual", "--json", cwd=cwd))
    assert compared["runs"] == ["gated", "dual"]
    assert set(compared["differences"]) == {"fusion.name", "train.lr"} | GATED_PARAMS
    assert compared["differences"]["train.lr"] == [1e-3, 3e-3]
    assert compared["metrics"]["recall@1"] == [runs["gated"]["metrics"]["recall@1"], runs["dual"]["metrics"]["recall@1"]]

    table = cli("runs", "compare", "gated", "dual", "--runs-dir", str(runs_dir), cwd=cwd.parent)
    assert table.returncode == 0, table.stderr
    for text in ("fusion.name", "train.lr", "recall@1", "gated", "none"):
        assert text in table.stdout


def test_cli_eval_matches_the_summary(runs, runs_dir):
    result = ok_json(cli("eval", "dual", "--checkpoint", "final", "--device", "cpu", "--json", cwd=runs_dir.parent))
    assert (result["split"], result["checkpoint"], result["size"]) == ("val", "final", 16)
    metrics = runs["dual"]["metrics"]
    assert {k: result[k] for k in metrics} == pytest.approx(metrics)


@pytest.mark.parametrize("command", [["runs", "show"], ["eval"]], ids=["show", "eval"])
def test_cli_unknown_run_is_one_line_with_a_suggestion(runs, runs_dir, command):
    line = one_error_line(cli(*command, "gatde", cwd=runs_dir.parent))
    assert line.startswith("error: unknown run 'gatde'")
    assert "did you mean 'gated'" in line
