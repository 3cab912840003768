"""`mmreg predict`: each task's own prediction from a trained run; `mmreg caption` is its short
form and `mmreg eval --results` writes the task's own results file."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import mmreg
from mmreg.errors import ConfigError, InvalidParams
from mmreg.history import rebuild_run, weights_for
from mmreg.predict import predict_images, task_results

TINY = {
    "seed": 3,
    "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32},
    "model": {"dim": 32},
    "dataset": {"name": "shapes", "train_size": 32, "val_size": 16},
    "train": {"max_steps": 3, "batch_size": 8, "eval_batch_size": 16},
}


def test_vqa_predict_gives_the_top_answers_in_logit_order(tmp_path):
    summary = mmreg.run({**TINY, "task": "vqa", "loss": {"bce": {}}, "runs_dir": str(tmp_path / "runs")}, progress=False)
    run = Path(summary["run_dir"]).name
    image = tmp_path / "shape.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(image)
    question = "what colour is the circle?"
    out = subprocess.run(
        [sys.executable, "-m", "mmreg", "predict", run, str(image), "--text", question, "--top-k", "3", "--json", "--runs-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    predictions = json.loads(out.stdout)[0]["predictions"]
    run_path = tmp_path / "runs" / run
    p = rebuild_run(run_path, weights_for(run_path, "best")[0])
    model = p.model.eval()
    with torch.no_grad():
        batch = {**model.encoder.pixel_inputs([Image.open(image).convert("RGB")]), **model.encoder.tokenize([question])}
        logits = p.task.forward(model.head, model.fusion, model.encode(batch), batch)["logits"][0]
    top = logits.topk(3)
    assert [x["answer"] for x in predictions] == [p.classes[k] for k in top.indices.tolist()]
    assert [x["score"] for x in predictions] == [float(v) for v in top.values.sigmoid()]
    bad = subprocess.run([sys.executable, "-m", "mmreg", "predict", run, str(image), "--top-k", "0", "--runs-dir", str(tmp_path / "runs")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--top-k" in bad.stderr
    results = tmp_path / "results.json"
    ev = subprocess.run([sys.executable, "-m", "mmreg", "eval", run, "--results", str(results), "--runs-dir", str(tmp_path / "runs")],
                        capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ev.returncode == 0, ev.stderr
    written = json.loads(results.read_text())
    assert [r["question_id"] for r in written] == list(range(16)) and all(r["answer"] in p.classes for r in written)
    assert [r["answer"] for r in written[:2]] == [x[0]["answer"] for x in p.task.predict(model, model.encoder.pixel_inputs([s.image for s in p.val_split[:2]]), [s.question for s in p.val_split[:2]], 1)]


def test_retrieval_predict_ranks_the_candidate_captions(tmp_path):
    summary = mmreg.run({**TINY, "task": "retrieval", "runs_dir": str(tmp_path)}, progress=False)
    image = tmp_path / "shape.png"
    Image.new("RGB", (40, 40), (30, 30, 200)).save(image)
    texts = ["a small blue circle", "a large red square", "a shape"]
    out = predict_images(Path(summary["run_dir"]).name, [image], texts=texts, top_k=2, runs_dir=tmp_path)
    preds = out[0]["predictions"]
    assert len(preds) == 2 and {x["text"] for x in preds} <= set(texts) and preds[0]["score"] >= preds[1]["score"]


def test_classification_and_captioning_predict(tmp_path):
    from test_cli import cli, one_error_line

    image = tmp_path / "shape.png"
    Image.new("RGB", (40, 40), (30, 200, 30)).save(image)
    summary = mmreg.run({**TINY, "task": "classification", "loss": {"ce": {}}, "runs_dir": str(tmp_path)}, progress=False)
    classifier = Path(summary["run_dir"]).name
    preds = predict_images(classifier, [image, image], texts=["a shape"], top_k=10, runs_dir=tmp_path)
    assert [len(x["predictions"]) for x in preds] == [5, 5]  # five shape kinds: top-k capped
    scores = [x["score"] for x in preds[0]["predictions"]]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-5)
    refused = one_error_line(cli("caption", classifier, str(image), "--runs-dir", str(tmp_path), "--device", "cpu", cwd=tmp_path))
    assert "task 'classification', which predicts label, not caption" in refused
    with pytest.raises(ConfigError, match="task 'classification' has no results file format"):
        task_results(classifier, runs_dir=tmp_path, device="cpu")

    caption = {**TINY, "task": {"name": "captioning", "max_new_tokens": 6}, "fusion": {"name": "none"}, "loss": {"lm": {}}, "runs_dir": str(tmp_path)}
    run = Path(mmreg.run(caption, progress=False)["run_dir"]).name
    generated = predict_images(run, [image], runs_dir=tmp_path)[0]["predictions"]
    assert len(generated) == 1 and set(generated[0]) == {"caption"}
    shown = cli("caption", run, str(image), "--runs-dir", str(tmp_path), "--device", "cpu", "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == [{"image": str(image), "caption": generated[0]["caption"]}]
    plain = cli("caption", run, str(image), "--runs-dir", str(tmp_path), "--device", "cpu", cwd=tmp_path)
    assert plain.stdout == f"{image}: {generated[0]['caption']}\n"
    with pytest.raises(InvalidParams, match="task 'captioning' has no parameter 'num_beam'; did you mean 'num_beams'"):
        predict_images(run, [image], task_params={"num_beam": 2}, runs_dir=tmp_path)
    bad = one_error_line(cli("caption", run, str(image), "--beams", "0", "--runs-dir", str(tmp_path), cwd=tmp_path))
    assert "'num_beams'" in bad


def test_task_params_change_how_the_run_predicts_not_its_weights(tmp_path):
    image = tmp_path / "shape.png"
    Image.new("RGB", (40, 40), (200, 200, 30)).save(image)
    exp = {**TINY, "task": {"name": "captioning", "max_new_tokens": 6, "prompt": "a"}, "fusion": {"name": "none"}, "loss": {"lm": {}}}
    run = Path(mmreg.run({**exp, "runs_dir": str(tmp_path)}, progress=False)["run_dir"]).name
    given = predict_images(run, [image], task_params={"prompt": "a small", "num_beams": 2}, runs_dir=tmp_path)
    run_path = tmp_path / run
    p = rebuild_run(run_path, weights_for(run_path, "best")[0])
    p.task.prompt, p.task.num_beams = "a small", 2
    model = p.model.eval()
    with torch.inference_mode():
        expected = p.task.predict(model, model.encoder.pixel_inputs([Image.open(image).convert("RGB")]), [], 1)
    assert given[0]["predictions"] == expected[0] and expected[0][0]["caption"].startswith("a small")
    [unseen] = predict_images(run, [image], task_params={"prompt": "a portrait of"}, runs_dir=tmp_path)  # words training never saw
    assert unseen["predictions"][0]["caption"].startswith("a portrait of")
