"""The `zeroshot` task: CLIP's prompt ensemble and CLIP_benchmark's metrics on hand-built cases,
a run that trains contrastively and evaluates zero-shot (also with no step at all), `mmreg eval`
of a trained run on another task and dataset, and bad input refused in one line."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import mmreg
from mmreg.components import Modality
from mmreg.errors import ConfigError, IncompatibleParts, InvalidParams
from mmreg.history import EVAL_INFO, benchmark_record, evaluate_run
from mmreg.plugins import load_plugins
from mmreg.testing.tasks import check_task
from mmreg_plugins.tasks.zeroshot import (
    ClassScorer,
    ZeroShot,
    ZeroShotEvaluation,
    class_prompts,
    ensemble,
    label_ranks,
    metric_names,
    zeroshot_metrics,
)
from mmreg_plugins.tasks.zeroshot_plugin import OPENAI_TEMPLATES, SIMPLE_TEMPLATES


def tiny(runs_dir: Path, name: str, **train) -> dict:
    return {
        "seed": 3,
        "name": name,
        "runs_dir": str(runs_dir),
        "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32},
        "fusion": {"name": "none"},
        "model": {"dim": 32},
        "dataset": {"name": "shapes", "train_size": 32, "val_size": 16},
        "task": {"name": "zeroshot", "templates": ["a {c}", "a small {c}"]},
        "loss": {"infonce": {}},
        "train": {"max_steps": 3, "batch_size": 8, "eval_batch_size": 16, "device": "cpu", **train},
    }


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    env["COLUMNS"] = "200"
    return subprocess.run([sys.executable, "-m", "mmreg", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


# -- the pure parts, by hand ---------------------------------------------------


def test_prompts_from_templates_and_from_a_mapping():
    assert class_prompts(["cat", "dog"], ["a {c}", "the {c}."]) == (["a cat", "the cat.", "a dog", "the dog."], [0, 0, 1, 1])
    mapping = {"dog": ["a good boy", "a {c} on a lawn"], "cat": ["a cat"], "unused": ["x"]}
    assert class_prompts(["cat", "dog"], mapping) == (["a cat", "a good boy", "a dog on a lawn"], [0, 1, 1])
    with pytest.raises(ConfigError, match="no prompts to class 'dog'"):
        class_prompts(["cat", "dog"], {"cat": ["a cat"]})


def test_template_sets_are_clips():
    assert len(OPENAI_TEMPLATES) == len(set(OPENAI_TEMPLATES)) == 80 and len(SIMPLE_TEMPLATES) == 7
    assert set(SIMPLE_TEMPLATES) <= set(OPENAI_TEMPLATES) and all("{c}" in t for t in OPENAI_TEMPLATES)


def test_ensemble_is_the_normalised_mean_of_normalised_prompts():
    vectors = torch.tensor([[3.0, 4.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
    # class 0: (0.6, 0.8, 0) and (1, 0, 0) average to (0.8, 0.4, 0), of length sqrt(0.8)
    cat = [0.8 / math.sqrt(0.8), 0.4 / math.sqrt(0.8), 0.0]
    # class 1: (0, 0, 1) and (0, 1, 1)/sqrt(2) average to (0, a, 0.5 + a) with a = 1 / (2 sqrt 2)
    a = 1 / (2 * math.sqrt(2))
    length = math.sqrt(a**2 + (0.5 + a) ** 2)
    dog = [0.0, a / length, (0.5 + a) / length]
    torch.testing.assert_close(ensemble(vectors, torch.tensor([0, 0, 1, 1]), 2), torch.tensor([cat, dog]))


# Six images against six classes (scores set by hand), labels below; each row's rank by hand.
SCORES = torch.tensor([
    [5.0, 4, 3, 2, 1, 0],  # label 0: best -> rank 0
    [1.0, 5, 4, 3, 2, 0],  # label 0: four classes above -> rank 4 (in the top 5, not the top 1)
    [0.0, 0, 5, 0, 0, 0],  # label 1: every other class at least as high -> rank 5
    [0.0, 9, 1, 2, 3, 4],  # label 1: best -> rank 0
    [3.0, 3, 3, 1, 1, 1],  # label 2: tied with classes 0 and 1, ties count against it -> rank 2
    [0.0, 1, 2, 3, 4, 5],  # label 3: classes 4 and 5 above -> rank 2
])  # fmt: skip
LABELS = torch.tensor([0, 0, 1, 1, 2, 3])


def test_ranks_and_metrics_by_hand():
    ranks = label_ranks(SCORES, LABELS)
    assert ranks.tolist() == [0, 4, 5, 0, 2, 2]
    metrics = zeroshot_metrics(ranks, LABELS, 6)
    # acc1: images 0 and 3; acc5: all but image 2; per class (0, 1, 2, 3 have images): 1/2, 1/2, 0, 0
    assert list(metrics) == list(metric_names(6)) == ["acc1", "acc5", "mean_per_class_recall"]
    assert metrics == pytest.approx({"acc1": 2 / 6, "acc5": 5 / 6, "mean_per_class_recall": 0.25})


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # class 5 is predicted, never true
def test_mean_per_class_recall_is_clip_benchmarks_balanced_accuracy():
    metrics = pytest.importorskip("sklearn.metrics")
    ranks = label_ranks(SCORES, LABELS)
    predicted = SCORES.argmax(dim=1)  # no tie decides a row's top-1 correctly here
    expected = metrics.balanced_accuracy_score(LABELS.numpy(), predicted.numpy())
    assert zeroshot_metrics(ranks, LABELS, 6)["mean_per_class_recall"] == pytest.approx(expected)


def test_fewer_than_five_classes_have_no_top5():
    scores, labels = torch.tensor([[2.0, 1, 0], [2.0, 1, 0], [0.0, 1, 2]]), torch.tensor([0, 1, 2])
    assert metric_names(3) == ("acc1", "mean_per_class_recall")
    metrics = zeroshot_metrics(label_ranks(scores, labels), labels, 3)
    assert metrics == pytest.approx({"acc1": 2 / 3, "mean_per_class_recall": 2 / 3})
    task = ZeroShot(templates=["a {c}"])
    task.classes = ["a", "b", "c"]
    assert ZeroShotEvaluation(task).names == ("acc1", "mean_per_class_recall")


# -- class scoring through the model interface, with embeddings set by hand ------------------------

PROMPTS = {"a cat": [3.0, 4.0, 0.0], "the cat": [1.0, 0.0, 0.0], "a dog": [0.0, 0.0, 2.0], "the dog": [0.0, 1.0, 1.0]}


class HandEncoder:
    """Each known prompt is one token; its embedding is the vector above (the encoder's own: doubled)."""

    single_stream, shared_space = False, True

    def __init__(self) -> None:
        self.texts = list(PROMPTS)

    def tokenize(self, texts):
        ids = torch.tensor([[self.texts.index(t)] for t in texts])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def vectors(self, input_ids):
        return torch.tensor([PROMPTS[self.texts[i]] for i in input_ids[:, 0].tolist()])

    def encode_texts(self, input_ids, attention_mask):
        return Modality(pooled=2 * self.vectors(input_ids))


class Cosine:
    needs_tokens = False

    def score(self, image, text):
        return F.normalize(image.pooled, dim=-1) @ F.normalize(text.pooled, dim=-1).T


class TokenScores:
    """A fusion reading token sequences; prompt p scores p + 10 * image row, whatever it holds."""

    needs_tokens = True

    def score(self, image, text):
        return 10 * torch.arange(len(image.pooled)).unsqueeze(1).float() + torch.arange(len(text)).float()


class HandModel:
    device = torch.device("cpu")
    head, needs = None, frozenset({"scores"})

    def __init__(self, fusion, tokens: bool = False) -> None:
        self.encoder, self.fusion, self.tokens = HandEncoder(), fusion, tokens

    def encode_texts(self, input_ids, attention_mask):
        vectors = self.encoder.vectors(input_ids)
        return Modality(tokens=vectors.unsqueeze(1), mask=attention_mask.bool()) if self.tokens else Modality(pooled=vectors)


def test_a_pooled_fusion_scores_images_against_the_hand_computed_ensemble():
    images = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.2, 1.0]])
    expected = ensemble(torch.tensor(list(PROMPTS.values())), torch.tensor([0, 0, 1, 1]), 2)
    scorer = ClassScorer(HandModel(Cosine()), ["cat", "dog"], ["a {c}", "the {c}"], "fusion")
    assert scorer.side.pooled.norm(dim=-1).tolist() == pytest.approx([3.0, 1.70710678])  # the prompts' mean lengths
    cosines = F.normalize(images, dim=-1) @ expected.T
    torch.testing.assert_close(scorer(Modality(pooled=images)), cosines)
    encoder_space = ClassScorer(HandModel(Cosine()), ["cat", "dog"], ["a {c}", "the {c}"], "encoder")
    torch.testing.assert_close(encoder_space(Modality(pooled=images)), cosines)


def test_a_token_fusion_averages_each_class_prompt_scores():
    scorer = ClassScorer(HandModel(TokenScores(), tokens=True), ["cat", "dog"], ["a {c}", "the {c}"], "fusion")
    scores = scorer(Modality(pooled=torch.zeros(2, 3)))  # prompts score 0, 1 (cat), 2, 3 (dog), +10 per image row
    assert scores.tolist() == [[0.5, 2.5], [10.5, 12.5]]


# -- runs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """The summary of a tiny run trained with infonce and evaluated zero-shot."""
    return mmreg.run(tiny(tmp_path_factory.mktemp("zs") / "runs", "trained"), progress=False)


def test_a_contrastive_run_evaluates_zero_shot(trained):
    assert trained["task"] == "zeroshot" and trained["best"]["metric"] == "acc1" and trained["best"]["higher_is_better"]
    assert list(trained["metrics"]) == ["acc1", "acc5", "mean_per_class_recall"]
    assert all(0.0 <= v <= 1.0 for v in trained["metrics"].values())
    assert trained["zeroshot"] == {
        "images": 16, "classes": 5, "prompts": 10, "templates": "given", "space": "fusion",
        "scoring": "NoFusion score against each class's prompt ensemble", "chance@1": 0.2,
    }  # fmt: skip
    run_dir = Path(trained["run_dir"])
    assert json.loads((run_dir / "classes.json").read_text()) == ["circle", "square", "triangle", "diamond", "cross"]
    expected = {"split": "val", "checkpoint": "final", "size": 16, "weights": str(run_dir / "model.safetensors"), "device": "cpu"}
    expected.update(trained["metrics"], task="zeroshot", dataset="shapes")
    result = evaluate_run(run_dir, checkpoint="final", device="cpu")
    assert result.pop("described") == trained["zeroshot"]  # how it scored, as the run described it
    assert result == pytest.approx(expected)


@pytest.mark.parametrize("space", ["fusion", "encoder"])
def test_max_steps_zero_evaluates_the_initial_weights_once(tmp_path, space):
    experiment = tiny(tmp_path / "runs", "untrained", max_steps=0)
    experiment["task"]["space"] = space
    summary = mmreg.run(experiment, progress=False)
    assert (summary["steps"], summary["best"]["step"], summary["best"]["metric"], summary["zeroshot"]["space"]) == (0, 0, "acc1", space)
    assert summary["best"]["value"] == summary["metrics"]["acc1"]
    run_dir = Path(summary["run_dir"])
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in lines] == [(0, "val")]
    for checkpoint in ("best", "last", "final"):  # the initial weights, saved as a run's are
        result = evaluate_run(run_dir, checkpoint=checkpoint, device="cpu")
        assert {k: result[k] for k in summary["metrics"]} == pytest.approx(summary["metrics"])


def test_the_task_keeps_the_contract_of_the_kit():
    check_task({
        "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32}, "model": {"dim": 32}, "fusion": {"name": "concat"},
        "dataset": {"name": "shapes", "train_size": 16, "val_size": 8}, "train": {"batch_size": 4},
        "task": {"name": "zeroshot", "templates": "simple"}, "loss": {"infonce": {}},
    })  # fmt: skip


def test_predict_ranks_the_given_class_names(trained):
    from mmreg.predict import predict_images

    run_dir = Path(trained["run_dir"])
    image = run_dir.parent / "shape.png"
    load_plugins().registry("datasets").build("shapes", {"train_size": 2, "val_size": 2}, seed=0).split("val")[0].image.save(image)
    [result] = predict_images(run_dir, [image], texts=["circle", "square", "star"], top_k=2, device="cpu")
    classes, scores = [p["class"] for p in result["predictions"]], [p["score"] for p in result["predictions"]]
    assert len(classes) == len(set(classes)) == 2 and set(classes) <= {"circle", "square", "star"} and scores == sorted(scores, reverse=True)


# -- mmreg eval with another task and dataset ----------------------------------


def test_eval_swaps_in_the_task_and_dataset_without_retraining(tmp_path):
    retrieval = mmreg.run({**tiny(tmp_path / "runs", "retrieval"), "task": {"name": "retrieval"}}, progress=False)
    run_dir = Path(retrieval["run_dir"])
    result = evaluate_run(run_dir, device="cpu", task="zeroshot", dataset="digits",
                          overrides=["dataset.val_fraction=0.05", 'task.templates=["a handwritten digit {c}"]'])  # fmt: skip
    assert (result["task"], result["dataset"], result["size"]) == ("zeroshot", "digits", 90)
    assert set(result) - set(EVAL_INFO) == {"acc1", "acc5", "mean_per_class_recall"}
    record = benchmark_record(result, "retrieval", load_plugins())
    assert record == {"dataset": "digits", "model": "retrieval", "pretrained": "best", "task": "zeroshot_classification",
                      "metrics": {k: result[k] for k in ("acc1", "acc5", "mean_per_class_recall")}}  # fmt: skip
    again = evaluate_run(run_dir, device="cpu")  # the run's own evaluation is untouched
    assert {k: again[k] for k in retrieval["metrics"]} == pytest.approx(retrieval["metrics"])


NO_LABELS = '''from mmreg import hookimpl
from mmreg.components import Dataset


class Captions(Dataset):
    fields = frozenset({"image", "caption"})


@hookimpl
def mmreg_register_datasets(register):
    register("captions-only", Captions)
'''


def test_eval_refuses_what_cannot_work(trained, tmp_path):
    run_dir = Path(trained["run_dir"])
    (tmp_path / "captions_only.py").write_text(NO_LABELS)
    host = load_plugins([str(tmp_path / "captions_only.py")])
    with pytest.raises(IncompatibleParts, match="task 'zeroshot' needs label but dataset 'captions-only' has none"):
        evaluate_run(run_dir, device="cpu", dataset="captions-only", host=host)
    with pytest.raises(ConfigError, match=re.escape("sets only task.* and dataset.*")):
        evaluate_run(run_dir, device="cpu", overrides=["train.lr=0.1"])
    with pytest.raises(ConfigError, match="no prompts to class 'square'"):
        evaluate_run(run_dir, device="cpu", overrides=['task.templates={circle = ["a circle"]}'])
    with pytest.raises(InvalidParams, match=r"has no \{c\}"):
        mmreg.run({**tiny(tmp_path / "runs", "bad"), "task": {"name": "zeroshot", "templates": ["a photo"]}}, progress=False)
    with pytest.raises(ConfigError, match="this encoder has none; use task.space=fusion"):
        mmreg.run({**tiny(tmp_path / "runs", "dual"), "encoder": {"name": "dual"}, "task": {"name": "zeroshot", "space": "encoder"}}, progress=False)
    assert not (tmp_path / "runs").exists()


def test_cli_eval_writes_clip_benchmark_json(trained, tmp_path):
    run_dir = Path(trained["run_dir"])
    result = cli("eval", str(run_dir), "--task", "zeroshot", "--dataset", "shapes", "--set", "dataset.val_size=8",
                 "--set", "task.templates=simple", "--device", "cpu", "--output", "zs.json", "--json", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    written = json.loads((tmp_path / "zs.json").read_text())
    assert list(written) == ["dataset", "model", "pretrained", "task", "metrics"]
    assert (written["dataset"], written["model"], written["task"], shown["size"]) == ("shapes", run_dir.name, "zeroshot_classification", 8)
    assert written["metrics"] == {k: shown[k] for k in ("acc1", "acc5", "mean_per_class_recall")}


@pytest.mark.parametrize(
    "args, words",
    [
        (["eval", "RUN", "--task", "zeroshto"], ["unknown task 'zeroshto'", "did you mean 'zeroshot'"]),
        (["eval", "RUN", "--set", 'task.templates=["a photo"]'], ["'templates'", "has no {c}"]),
    ],
    ids=["unknown-task", "template-without-c"],
)
def test_cli_bad_input_is_one_line(trained, tmp_path, args, words):
    line = one_error_line(cli(*[trained["run_dir"] if a == "RUN" else a for a in args], cwd=tmp_path))
    assert all(w in line for w in words), line
