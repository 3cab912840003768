"""Experiment trackers: what TensorBoard and MLflow hold after a run, a resumed run and a search, read back
with their own readers (tensorboard's EventAccumulator, mlflow's client) and compared with metrics.jsonl."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from test_cli import TINY, cli

import mmreg
from mmreg.components import LoopCallback
from mmreg.config import load_experiment, validate
from mmreg.errors import ConfigError
from mmreg.tables import flatten
from mmreg.tracking import mlflow_key, scalars, study_track

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

TINY_SETTINGS = [a for a in TINY if "=" in a] + ["train.max_steps=3", "train.batch_size=8", "train.device=cpu"]
EVERY_STEP = ["--set", "train.log_every=1", "--set", "train.eval_every=2", "--max-steps", "4"]


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def expected_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """{SPLIT/KEY: {step: value}} of every number in metrics.jsonl but step and epoch, and the
    deciding metric's kept value (summary.json's best) as best/METRIC at the last step."""
    out: dict[str, dict[int, float]] = {}
    for r in records(run_dir):
        for key, value in r.items():
            if key not in ("step", "epoch", "split") and isinstance(value, int | float):
                out.setdefault(f"{r['split']}/{key}", {})[r["step"]] = value
    best = json.loads((run_dir / "summary.json").read_text())["best"]
    out[f"best/{best['metric']}"] = {max(r["step"] for r in records(run_dir)): best["value"]}
    return out


def tensorboard_scalars(run_dir: Path) -> tuple[dict[str, dict[int, float]], list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in tags["scalars"]}, tags["images"]


def mlflow_client(uri: str, monkeypatch: pytest.MonkeyPatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks readers of a file store to opt in too
    return MlflowClient(tracking_uri=uri)


def assert_tensorboard_equals_metrics(run_dir: Path) -> None:
    written, images = tensorboard_scalars(run_dir)
    wanted = expected_scalars(run_dir)
    assert set(written) == set(wanted) and {"train/loss", "train/lr", "val/recall@1"} <= set(written)
    for tag, by_step in wanted.items():
        assert set(written[tag]) == set(by_step), tag
        for step, value in by_step.items():
            assert written[tag][step] == pytest.approx(value, rel=1e-6, abs=1e-12), (tag, step)  # stored as float32
    assert "curves" in images


def assert_mlflow_equals_run(client, run, run_dir: Path) -> None:
    """Params are the resolved config.toml; each metric's last value at each step is metrics.jsonl's."""
    config = flatten(tomllib.loads((run_dir / "config.toml").read_text()))
    assert run.data.params == {
        mlflow_key(k): str(v) if isinstance(v, str | int | float | bool) else json.dumps(v) for k, v in config.items()
    }
    wanted = expected_scalars(run_dir)
    assert set(run.data.metrics) == {mlflow_key(k) for k in wanted}
    for key, by_step in wanted.items():
        history = sorted(client.get_metric_history(run.info.run_id, mlflow_key(key)), key=lambda m: (m.step, m.timestamp))
        last = {m.step: m.value for m in history}
        assert last == by_step, key
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["curves.png"]
    assert run.info.status == "FINISHED"


def test_scalars_are_every_number_of_a_record_named_by_split():
    record = {"step": 4, "epoch": 1, "split": "val", "recall@1": 0.5, "i2t_recall@1": 0.25, "note": "x", "flag": True}
    assert scalars(record) == {"val/recall@1": 0.5, "val/i2t_recall@1": 0.25}
    assert scalars({"step": 3, "split": "train", "skipped": "non-finite loss"}) == {}
    assert mlflow_key("val/i2t_recall@10") == "val/i2t_recall_at_10" and mlflow_key("train/loss/infonce") == "train/loss/infonce"


def test_track_settings_are_validated_and_flags_replace_the_files_list(tmp_path):
    with pytest.raises(ConfigError, match=r"track\.trackers\.0.*'tensorboard', 'mlflow', 'wandb' or 'aim'.*tensorbord"):
        validate({"track": {"trackers": ["tensorbord"]}})
    with pytest.raises(ConfigError, match="unknown setting 'track.mlflow_url'; did you mean 'mlflow_uri'"):
        validate({"track": {"mlflow_url": "http://x"}})
    (tmp_path / "e.toml").write_text('[track]\ntrackers = ["mlflow"]\nproject = "p"\n')
    exp = load_experiment(tmp_path / "e.toml", {"track": ["tensorboard", "wandb"]})
    assert exp.track.trackers == ["tensorboard", "wandb"] and exp.track.project == "p"
    assert load_experiment(tmp_path / "e.toml").track.trackers == ["mlflow"]


def test_a_trial_logs_under_its_study_unless_uris_are_given(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    table = study_track({"trackers": ["mlflow", "aim"]}, "s", tmp_path / "s")
    assert table == {"trackers": ["mlflow", "aim"], "group": "s", "mlflow_uri": (tmp_path / "s" / "mlruns").as_uri(), "aim_repo": str(tmp_path / "s")}
    given = study_track({"trackers": ["mlflow"], "mlflow_uri": "http://server:5000"}, "s", tmp_path / "s")
    assert given["mlflow_uri"] == "http://server:5000" and given["group"] == "s"
    assert study_track(None, "s", tmp_path) == {}  # no trackers: the trial's config stays as it was


def test_a_missing_tracker_package_is_refused_before_the_run_directory(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    exp = load_experiment(None, {"runs_dir": str(tmp_path / "runs"), "track": ["tensorboard", "mlflow"]})
    with pytest.raises(ConfigError, match=r"tracker 'mlflow' needs the mlflow package.*pip install 'mmreg\[mlflow\]'"):
        mmreg.run(exp, progress=False)
    assert not (tmp_path / "runs").exists()


def test_a_run_logs_config_records_and_curves_to_tensorboard_and_mlflow(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = cli("run", *TINY, *EVERY_STEP, "--device", "cpu", "--track", "tensorboard", "--track", "mlflow", "--name", "t", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "t"
    assert {r["split"] for r in records(run_dir)} == {"train", "val"} and len(records(run_dir)) == 6
    assert_tensorboard_equals_metrics(run_dir)

    client = mlflow_client((run_dir / "mlruns").as_uri(), monkeypatch)
    experiment = client.get_experiment_by_name("mmreg")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "t" and json.loads((run_dir / "trackers.json").read_text()) == {"tensorboard": "tensorboard", "mlflow": run.info.run_id}
    assert_mlflow_equals_run(client, run, run_dir)


class StopAfter(LoopCallback):
    """Raises before step ``step + 1``, as a crash after a checkpoint would leave a run."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_start(self, step: int) -> None:
        if step == self.step:
            raise RuntimeError("stopped by the test")


def test_a_resumed_run_continues_its_tracker_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    flags = {"runs_dir": str(tmp_path / "runs"), "name": "r", "track": ["tensorboard", "mlflow"]}
    exp = load_experiment(None, flags, [*TINY_SETTINGS, "train.log_every=1", "train.eval_every=2", "train.max_steps=4"])
    run_dir = tmp_path / "runs" / "r"
    with pytest.raises(RuntimeError, match="stopped by the test"):  # steps 1-3 logged, the checkpoint is step 2's
        mmreg.run(exp, progress=False, callbacks=[StopAfter(3)])
    assert max(r["step"] for r in records(run_dir)) == 3
    client = mlflow_client((run_dir / "mlruns").as_uri(), monkeypatch)
    (failed,) = client.search_runs([client.get_experiment_by_name("mmreg").experiment_id])
    assert failed.info.status == "FAILED"

    mmreg.run(resume=run_dir, progress=False)
    assert max(r["step"] for r in records(run_dir)) == 4
    assert_tensorboard_equals_metrics(run_dir)  # step 3's first events are purged from what readers see
    (run,) = client.search_runs([client.get_experiment_by_name("mmreg").experiment_id])
    assert run.info.run_id == failed.info.run_id  # the same MLflow run, continued
    assert_mlflow_equals_run(client, run, run_dir)
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 5  # MLflow keeps step 3's first value too


def test_a_search_logs_one_run_per_trial_under_its_study(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "s.toml").write_text('[search]\nfusion = ["none", "gated"]\n')
    tiny = [arg for setting in TINY_SETTINGS for arg in ("--set", setting)]
    result = cli("search", "s.toml", *tiny, "--trials", "2", "--sampler", "grid", "--track", "tensorboard", "--track", "mlflow", "--json", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["states"] == {"complete": 2}
    study = tmp_path / "runs" / "s"
    client = mlflow_client((study / "mlruns").as_uri(), monkeypatch)
    experiment = client.get_experiment_by_name("s")  # the study is the MLflow experiment
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["trial-0000", "trial-0001"]
    for row in summary["rows"]:
        run_dir = Path(row["run_dir"])
        assert run_dir.parent == study / "trials"  # TensorBoard: a directory per trial under the study
        assert_tensorboard_equals_metrics(run_dir)
        run = runs[run_dir.name]
        assert run.data.params["fusion.name"] == row["params"]["fusion"] and run.data.params["track.group"] == "s"
        assert run.data.metrics["val/recall_at_1"] == pytest.approx(row["value"])
    assert not (study / "trials" / "trial-0000" / "mlruns").exists()
