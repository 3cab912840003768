"""The `vqa` task as the field trains and scores it: vocabulary, soft scores, BCE, official accuracy,
and the official results file."""

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import mmreg
from mmreg.api import collate_for, prepare
from mmreg.data import make_loader
from mmreg.train import evaluate
from mmreg.components import Sample
from mmreg.config import validate
from mmreg.errors import DataError, IncompatibleParts
from mmreg.plugins import load_plugins
from mmreg_plugins.losses.bce import SoftBinaryCrossEntropy
from mmreg_plugins.tasks._vqa_accuracy import normalise_answer, vqa_accuracy
from mmreg_plugins.tasks import vqa
from mmreg_plugins.tasks.vqa import VisualQuestionAnswering, answer_vocabulary

VQA = {
    "seed": 3,
    "task": "vqa",
    "loss": {"bce": {}},
    "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32},
    "model": {"dim": 32},
    "dataset": {"name": "shapes", "train_size": 32, "val_size": 16},
    "train": {"max_steps": 4, "batch_size": 8, "eval_batch_size": 16},
}


def sample(*answers, answer_type=None):
    return Sample(Image.new("RGB", (8, 8)), "", question="q?", answer=answers[0] if answers else None,
                  answers=answers if len(answers) > 1 else None, answer_type=answer_type)  # fmt: skip


def test_vocabulary_is_normalised_answers_given_often_enough():
    answers = [("Left",) * 7 + ("on the left",) * 3, ("two",), ("2", "red")]
    assert answer_vocabulary(answers, 1) == ["left", "on left", "2", "red"]  # by count: 7, 3, 2, 1
    assert answer_vocabulary(answers, 3) == ["left", "on left"]
    with pytest.raises(DataError, match="vocabulary is empty; lower task.min_answer_count"):
        answer_vocabulary(answers, 8)
    with pytest.raises(DataError, match="question 1 has no answers"):
        answer_vocabulary([("yes",), ()], 1)


def test_targets_are_soft_scores_and_official_accuracies():
    task = VisualQuestionAnswering()
    task.set_classes(["left", "on left", "red", "blue"])
    out = task.targets([sample(*(["left"] * 7 + ["on the left"] * 2 + ["red"])), sample("Red", answer_type="other")])
    # 7 -> 1, 2 -> 0.6, 1 -> 0.3; the single answer gets 1
    expected = torch.tensor([[1.0, 0.6, 0.3, 0.0], [0.0, 0.0, 1.0, 0.0]])
    assert torch.allclose(out["labels"], expected) and torch.allclose(out["answer_scores"], expected)
    assert out["answer_types"].tolist() == [-1, 2]
    with pytest.raises(DataError, match="unknown answer type"):
        task.targets([sample("red", answer_type="colour")])


def test_bce_is_vilts_loss_and_refuses_class_indices():
    logits, labels = torch.randn(4, 6), torch.rand(4, 6)
    step = mmreg.components.Step(image=None, text=None, logits=logits, labels=labels)
    expected = F.binary_cross_entropy_with_logits(logits, labels) * 6
    assert SoftBinaryCrossEntropy()(step).item() == pytest.approx(expected.item())
    with pytest.raises(IncompatibleParts, match="use it with --task vqa"):
        SoftBinaryCrossEntropy()(mmreg.components.Step(image=None, text=None, logits=logits, labels=torch.zeros(4, dtype=torch.long)))


def test_shapes_gives_several_answers_where_the_question_allows():
    p = prepare(validate(VQA), load_plugins())
    several = [s for s in p.train_split if s.answers]
    assert several and all(s.question.startswith("where") for s in several)
    assert {"left", "on left"} <= set(p.classes) or {"top", "on top"} <= set(p.classes)
    assert p.dataset.answers("train") == [s.human_answers() for s in p.train_split]


def test_bce_fits_a_fixed_batch_and_the_metric_is_the_official_accuracy():
    p = prepare(validate(VQA), load_plugins())
    collate = collate_for(p)
    batch = collate(list(p.train_split[:16]))
    optimizer = torch.optim.AdamW(p.model.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        loss, _ = p.model(batch)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < 0.3 * losses[0]  # soft targets leave a floor: their own entropy
    p.model.eval()
    metrics = evaluate(p.model, make_loader(p.train_split[:16], collate, 16, shuffle=False, seed=0), torch.device("cpu"))
    with torch.no_grad():
        features = p.model.encode(batch)
        logits = p.task.forward(p.model.head, p.model.fusion, features, batch)["logits"]
    by_hand = [
        vqa_accuracy(p.classes[k], [normalise_answer(a) for a in s.human_answers()]) if s.answers else float(p.classes[k] == s.answer)
        for k, s in zip(logits.argmax(-1).tolist(), p.train_split[:16], strict=True)
    ]
    assert metrics["vqa_accuracy"] == pytest.approx(sum(by_hand) / 16) and metrics["vqa_accuracy"] > 0.3  # chance: ~0.05


def test_vqa_runs_end_to_end_and_saves_the_vocabulary(tmp_path):
    summary = mmreg.run({**VQA, "runs_dir": str(tmp_path)}, progress=False)
    assert set(summary["metrics"]) == {"vqa_accuracy"} and 0.0 <= summary["metrics"]["vqa_accuracy"] <= 1.0
    classes = json.loads((tmp_path / summary["run_dir"].split("/")[-1] / "classes.json").read_text())
    assert any(c.startswith("on ") for c in classes)


def test_results_are_the_official_format_in_batches(monkeypatch):
    p = prepare(validate(VQA), load_plugins())
    samples = [*p.val_split[:4], *(replace(s, question_id=100 + i) for i, s in enumerate(p.val_split[4:7]))]
    monkeypatch.setattr(vqa, "RESULTS_BATCH", 3)  # batches of 3, so ids and order cross batches
    model = p.model.eval()
    with torch.inference_mode():
        results = p.task.results(model, samples)
        best = p.task.predict(model, model.encoder.pixel_inputs([s.image for s in samples]), [s.question for s in samples], 1)
    assert [r["question_id"] for r in results] == [0, 1, 2, 3, 100, 101, 102]  # the sample's id, else its index
    assert [r["answer"] for r in results] == [b[0]["answer"] for b in best] and set(results[0]) == {"question_id", "answer"}
