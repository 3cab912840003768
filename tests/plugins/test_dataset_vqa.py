"""`vqa` dataset: the VQA v2 layout and the CSV / JSON Lines form, trained and evaluated."""

import json

import numpy as np
import pytest
from PIL import Image

import mmreg
from mmreg.api import prepare
from mmreg.config import validate
from mmreg.errors import DataError
from mmreg.plugins import load_plugins
from mmreg.predict import task_results

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def write_v2(root, subtype, n, start):
    """A VQA v2 directory: questions, annotations (ten answers, types), COCO-named images."""
    (root / subtype).mkdir(parents=True)
    rng = np.random.default_rng(start)
    questions, annotations = [], []
    for i in range(n):
        qid, colour = start + i, ["red", "blue"][i % 2]
        Image.new("RGB", (32, 32), COLOURS[colour]).save(root / subtype / f"COCO_{subtype}_{qid:012d}.jpg")
        kind = ["yes/no", "other"][i % 2]
        answers = ["yes", "yes", "yes", "no"] * 2 + ["yes", "yes"] if kind == "yes/no" else [colour] * 8 + [f"{colour}ish"] * 2
        questions.append({"question_id": qid * 10, "image_id": qid, "question": "is it red?" if kind == "yes/no" else "what colour is it?"})
        annotations.append({"question_id": qid * 10, "answer_type": kind, "multiple_choice_answer": answers[0],
                            "answers": [{"answer": a, "answer_id": j + 1} for j, a in enumerate(rng.permutation(answers).tolist())]})  # fmt: skip
    (root / f"q_{subtype}.json").write_text(json.dumps({"data_subtype": subtype, "questions": questions}))
    (root / f"a_{subtype}.json").write_text(json.dumps({"annotations": annotations}))
    return {"questions": str(root / f"q_{subtype}.json"), "annotations": str(root / f"a_{subtype}.json"), "images": str(root / subtype)}


def test_a_vqa_v2_directory_trains_and_evaluates(tmp_path):
    data = {"name": "vqa", "train": write_v2(tmp_path, "train2014", 24, 1), "val": write_v2(tmp_path, "val2014", 8, 100)}
    exp = {
        "seed": 0, "task": "vqa", "loss": {"bce": {}}, "dataset": data, "runs_dir": str(tmp_path / "runs"),
        "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32, "image_size": 32}, "model": {"dim": 32},
        "train": {"max_steps": 3, "batch_size": 8, "eval_batch_size": 8},
    }  # fmt: skip
    summary = mmreg.run(exp, progress=False)
    assert set(summary["metrics"]) == {"vqa_accuracy", "vqa_accuracy/yes/no", "vqa_accuracy/other"}
    results = task_results(summary["run_dir"].split("/")[-1], runs_dir=tmp_path / "runs")
    assert [r["question_id"] for r in results] == [q * 10 for q in range(100, 108)]
    p = prepare(validate(exp), load_plugins())
    assert p.train_split[0].answers and len(p.train_split[0].answers) == 10 and p.train_split[1].answer_type == "other"


def test_csv_and_jsonl_forms(tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    (tmp_path / "q.csv").write_text("image,question,answers\na.png,what is it?,square;a square;square\n")
    (tmp_path / "q.jsonl").write_text(json.dumps({"image": "a.png", "question": "how many?", "answers": ["two", "2"], "question_id": 7}) + "\n")
    data = load_plugins().registry("datasets").build("vqa", {"train": {"file": str(tmp_path / "q.csv")}, "val": {"file": str(tmp_path / "q.jsonl")}}, seed=0)
    assert data.answers("train") == [("square", "a square", "square")] and data.split("val")[0].question_id == 7
    (tmp_path / "empty.csv").write_text("image,question,answers\na.png,what is it?,\n")
    with pytest.raises(DataError, match="row 1 has no answers"):
        load_plugins().registry("datasets").build("vqa", {"train": {"file": str(tmp_path / "empty.csv")}, "val": {"file": str(tmp_path / "q.jsonl")}}, seed=0)
