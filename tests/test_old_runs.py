"""Run directories written before tasks had parameters (``task = "NAME"``, generation settings in
``[eval]``, the answer vocabulary in ``[answers]``; tests/fixtures/runs-v0, made by the version before)
still evaluate, predict, resume and list, their old settings read as the task's parameters, and
parameters added since at the value those runs used (their tiny tokenizers' word vocabularies)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from test_cli import cli

FIXTURES = Path(__file__).with_name("fixtures") / "runs-v0"


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURES, tmp_path / "runs", symlinks=True)
    return tmp_path / "runs"


def test_old_runs_evaluate_with_their_settings_read_as_task_parameters(runs):
    for run, metrics in (("captioning-v0", {"cider", "bleu4"}), ("vqa-v0", {"vqa_accuracy"})):
        result = cli("eval", run, "--runs-dir", str(runs), "--device", "cpu", "--json", cwd=runs.parent)
        assert result.returncode == 0, result.stderr
        assert metrics <= set(json.loads(result.stdout))
    from mmreg.history import rebuild_run

    p = rebuild_run(runs / "captioning-v0", runs / "captioning-v0" / "model.safetensors")
    params = {"num_beams": 2, "max_new_tokens": 6, "prompt": "a", "vocabulary": "words"}  # the tokenizer the run had
    assert (p.exp.task.name, p.exp.task.params, p.exp.encoder.params["vocabulary"]) == ("captioning", params, "words")
    assert (p.task.num_beams, p.task.prompt) == (2, "a")  # [eval] of the old layout reached the task
    assert p.model.encoder.tokenizer.unk_token_id in p.model.encoder.tokenizer("a glowing circle")["input_ids"]  # word-level


def test_old_runs_predict_resume_and_list(runs):
    Image.new("RGB", (64, 64), (200, 30, 30)).save(runs.parent / "red.png")
    result = cli("predict", "captioning-v0", str(runs.parent / "red.png"), "--runs-dir", str(runs), "--device", "cpu", "--json", cwd=runs.parent)
    assert result.returncode == 0, result.stderr
    caption = json.loads(result.stdout)[0]["predictions"][0]["caption"]
    assert caption.startswith("a")  # the old eval.prompt
    resumed = cli("run", "--resume", str(runs / "vqa-v0"), "--json", cwd=runs.parent)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["steps"] == 2  # the saved run had finished: nothing left to train, nothing refused
    listing = json.loads(cli("runs", "list", "--runs-dir", str(runs), "--json", cwd=runs.parent).stdout)
    assert {r["name"]: r["task"] for r in listing} == {"captioning-v0": "captioning", "vqa-v0": "vqa"}
    assert all(r["headline"] for r in listing)
