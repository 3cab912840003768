"""Tasks are plugins: a third-party task trains with no core change; the built-in ones
keep their metrics; captioning generates, resumes and refuses what cannot work."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from interrupted import interrupted_and_resumed
from safetensors.torch import load_file
from torch import nn

import mmreg
from mmreg.api import collate_for, prepare
from mmreg.components import Dataset, Encoded, Encoder, Evaluation, Fusion, Loss, Sample, Step, Task
from mmreg.config import validate
from mmreg.data import make_loader
from mmreg.errors import IncompatibleParts
from mmreg.hookspecs import hookimpl
from mmreg.plugins import load_plugins
from mmreg.predict import predict_images
from mmreg.train import evaluate

TINY = {
    "seed": 3,
    "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32},
    "model": {"dim": 32},
    "dataset": {"name": "shapes", "train_size": 32, "val_size": 16},
    "train": {"max_steps": 4, "batch_size": 8, "eval_batch_size": 16},
}

# -- a third-party task, written here: regression of how much of the image the shape covers


def coverage(sample: Sample) -> float:
    """Fraction of pixels far from the corner pixel's colour (the background, with its noise)."""
    pixels = np.asarray(sample.image.convert("RGB"), dtype=np.int16)
    return float((np.abs(pixels - pixels[0, 0]).sum(-1) > 90).mean())


class R2(Evaluation):
    names = ("r2",)

    def __init__(self, task: Task) -> None:
        self.task, self.predicted, self.true = task, [], []

    def update(self, model: nn.Module, features: Encoded, batch: dict[str, torch.Tensor]) -> None:
        self.predicted.append(self.task.forward(model.head, model.fusion, features, batch)["logits"].squeeze(-1))
        self.true.append(batch["labels"])

    def compute(self) -> dict[str, float]:
        predicted, true = torch.cat(self.predicted), torch.cat(self.true)
        return {"r2": 1 - ((predicted - true) ** 2).sum().item() / ((true - true.mean()) ** 2).sum().item()}


class ShapeSize(Task):
    provides = frozenset({"logits", "labels"})
    reads_fused = True

    def build_head(self, width: int, dataset: Dataset, encoder: Encoder) -> nn.Module:
        return nn.Linear(width, 1)

    def targets(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        return {"labels": torch.tensor([coverage(s) for s in samples])}

    def forward(self, head: nn.Module, fusion: Fusion, features: Encoded, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": head(fusion.fuse(features.image, features.text))}

    def evaluations(self, model: nn.Module) -> list[Evaluation]:
        return [R2(self)]


class MeanSquaredError(Loss):
    needs = frozenset({"logits", "labels"})

    def forward(self, step: Step) -> torch.Tensor:
        return ((step.logits.squeeze(-1) - step.labels) ** 2).mean()


@hookimpl
def mmreg_register_tasks(register):
    register("shape-size", ShapeSize, help="regress the fraction of the image the shape covers")


@hookimpl
def mmreg_register_losses(register):
    register("mse", MeanSquaredError)


@pytest.fixture
def host():
    host = load_plugins()
    host.register_object("third-party-task", __import__(__name__, fromlist=["x"]))
    return host


def test_a_task_plugin_registers_trains_and_reports_its_metric(tmp_path, host):
    assert "shape-size" in host.registry("tasks")
    exp = {**TINY, "task": "shape-size", "loss": {"mse": {}}, "fusion": {"name": "concat"}, "runs_dir": str(tmp_path)}
    exp["train"] = {**TINY["train"], "max_steps": 12}
    p = prepare(validate(exp), host)
    untrained = evaluate(p.model, make_loader(p.val_split, collate_for(p), 16, shuffle=False, seed=0), torch.device("cpu"))
    summary = mmreg.run(exp, host=host, progress=False)
    assert summary["task"] == "shape-size"
    assert summary["best"]["metric"] == "r2" and set(summary["metrics"]) == {"r2"}
    assert summary["metrics"]["r2"] > untrained["r2"] + 1


# -- captioning

CAPTION = {
    **TINY,
    "task": {"name": "captioning", "max_new_tokens": 8},
    "fusion": {"name": "none"},
    "loss": {"lm": {}},
    "train": {**TINY["train"], "lr": 3e-3},
}


def test_pooled_only_encoder_is_refused_for_captioning_before_any_weight(host):
    from test_combinations import PooledOnly

    host.register_object("pooled-only-encoder", __import__("test_combinations"))
    PooledOnly.built = 0
    with pytest.raises(IncompatibleParts, match=re.escape("task 'captioning' reads image tokens but encoder 'pooled-only'")):
        prepare(validate({**CAPTION, "encoder": {"name": "pooled-only"}}), host)
    assert PooledOnly.built == 0


def test_captioning_without_a_token_loss_is_refused():
    with pytest.raises(IncompatibleParts, match=re.escape("task 'captioning' trains a head but no chosen loss (infonce) reads its token_logits; add --loss lm")):
        prepare(validate({**CAPTION, "loss": {"infonce": {}}}))


@pytest.fixture(scope="module")
def captioner():
    p = prepare(validate({**CAPTION, "task": {**CAPTION["task"], "prompt": "a picture of"}}))
    batch = collate_for(p)(p.val_split[:4])
    with torch.no_grad():
        image = p.model.encode(batch).image_tokens
    return p, image


def test_beam_search_of_width_one_is_greedy_decoding(captioner, monkeypatch):
    p, image = captioner
    generated = p.task.generate(p.model.head, image)  # task.num_beams = 1
    # greedy by hand: the argmax of the decoder's next-token logits, until [EOS]
    tokenizer = p.task.tokenizer
    prompt_ids = p.task.prompt_ids()
    ids = torch.tensor([prompt_ids] * len(image))
    done = torch.zeros(len(image), dtype=torch.bool)
    with torch.no_grad():
        for _ in range(8):
            following = p.model.head(ids, torch.ones_like(ids), image)[:, -1].argmax(-1)
            following = following.masked_fill(done, tokenizer.pad_token_id)
            ids = torch.cat([ids, following[:, None]], dim=1)
            done |= following == tokenizer.eos_token_id
    assert generated == tokenizer.batch_decode(ids[:, len(prompt_ids) :].tolist(), skip_special_tokens=True)
    monkeypatch.setattr(p.task, "num_beams", 3)
    assert len(p.task.generate(p.model.head, image)) == len(image)


def test_prompted_prediction_starts_with_the_prompt_as_written(captioner, monkeypatch):
    p, _ = captioner
    pixels = p.model.encoder.pixel_inputs([s.image for s in p.val_split[:4]])
    with torch.no_grad():
        for [prediction] in p.task.predict(p.model, pixels, [], 1):
            assert prediction["caption"].startswith("a picture of")
        monkeypatch.setattr(p.task, "prompt", "A Picture")
        for [prediction] in p.task.predict(p.model, pixels, [], 1):
            assert prediction["caption"].startswith("A Picture")
        monkeypatch.setattr(p.task, "prompt", "a portrait of")  # words no training caption holds: spelled in bytes
        for [prediction] in p.task.predict(p.model, pixels, [], 1):
            assert prediction["caption"].startswith("a portrait of")


def test_references_are_the_data_sets_strings_not_a_decode_of_token_ids():
    from types import SimpleNamespace

    from PIL import Image

    from mmreg_plugins.tasks.captioning import CaptionEvaluation, Captioning, utf8_rows, utf8_texts

    class Texts(Dataset):
        def texts(self, name: str, field: str = "caption") -> list[str]:
            return ["a big red circle on the left", "a small blue square at the top"]

    task = Captioning()
    task.build_head(8, Texts(), SimpleNamespace(image_token_dim=8))
    val = [
        Sample(Image.new("RGB", (4, 4), (200, 0, 0)), "A big red GLOWING circle, on the left."),  # "glowing": not in training
        Sample(Image.new("RGB", (4, 4), (0, 0, 200)), "A small blue square at the top."),
        Sample(Image.new("RGB", (4, 4), (0, 0, 200)), "a small blue square up top"),  # the same image, a second caption
    ]
    batch = task.targets(val)
    assert utf8_texts(batch["caption_utf8"]) == [s.caption for s in val]
    assert utf8_texts(utf8_rows(["ça — 日本", ""])) == ["ça — 日本", ""]
    visible = ["a big red circle on the left", "a small blue square at the top"]  # what a word-level decode would have compared against
    decoded = task.tokenizer.batch_decode(batch["caption_ids"].tolist(), skip_special_tokens=True)
    assert decoded[0].strip() == "a big red glowing circle, on the left."  # the model side loses no word either (lower-cased)

    def scores(generated: list[str]) -> dict[str, float]:
        evaluation = CaptionEvaluation(task)
        task.generate = lambda head, image: generated  # the decoder writes exactly these
        pixels = torch.stack([torch.from_numpy(np.asarray(s.image).copy()).permute(2, 0, 1) for s in val])
        evaluation.update(SimpleNamespace(head=None), SimpleNamespace(image_tokens=None), {**batch, "pixel_values": pixels})
        assert len(evaluation.references) == 2  # images are grouped by their pixels
        return evaluation.compute()

    assert scores([visible[0], visible[1], visible[1]])["bleu4"] < 0.9
    assert scores(["a big red glowing circle on the left", visible[1], visible[1]])["bleu4"] == pytest.approx(1.0)


def test_captioning_run_resumes_exactly_and_reports_bleu_and_cider(tmp_path):
    exp = validate({**CAPTION, "runs_dir": str(tmp_path), "train": {**CAPTION["train"], "checkpoint_every": 1, "eval_every": 4}})

    uninterrupted, resumed, second, whole = interrupted_and_resumed(exp, tmp_path, "cider", at=2)
    assert second.loop.step == 4 and resumed.steps == uninterrupted.steps == 4
    assert set(resumed.metrics) == {"cider", "bleu4"} and resumed.metrics == uninterrupted.metrics
    a = second.bare_model.state_dict()
    saved = load_file(whole / "checkpoints" / "last" / "model.safetensors")
    assert all(torch.equal(saved[k], a[k]) for k in saved)


def test_caption_and_eval_commands_on_a_trained_run(tmp_path):
    from test_cli import cli, one_error_line

    summary = mmreg.run({**CAPTION, "runs_dir": str(tmp_path / "runs")}, progress=False)
    p = prepare(validate(CAPTION))
    image = tmp_path / "shape.png"
    p.val_split[0].image.save(image)
    direct = predict_images(summary["run_dir"], [image], top_k=1, task_params={"num_beams": 2}, device="cpu")
    shown = cli("caption", summary["run_dir"], str(image), "--beams", "2", "--device", "cpu", "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == [{"image": str(image), "caption": direct[0]["predictions"][0]["caption"]}]
    evaluated = cli("eval", summary["run_dir"], "--device", "cpu", "--json", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["cider"] == pytest.approx(summary["metrics"]["cider"])
    missing = one_error_line(cli("caption", summary["run_dir"], "nowhere.png", cwd=tmp_path))
    assert "nowhere.png" in missing


@pytest.mark.parametrize("task", ["captioning", "vqa"])
def test_blip2_resumes_exactly(tmp_path, task):
    """A BLIP-2 run (only its Q-Former, queries and projection training; T5 for VQA's generated answers)
    interrupted and resumed ends where the uninterrupted one did, metrics and weights."""
    language_model = "t5" if task == "vqa" else "opt"
    exp = validate({
        **CAPTION, "runs_dir": str(tmp_path), "task": {"name": task, "max_new_tokens": 4},
        "encoder": {"name": "blip2", "hidden_size": 16, "layers": 1, "num_query_tokens": 4, "language_model": language_model, "max_length": 48},
        "loss": {"lm": {"label_smoothing": 0.0}}, "train": {**CAPTION["train"], "checkpoint_every": 1, "eval_every": 4},
    })  # fmt: skip
    headline = "cider" if task == "captioning" else "vqa_accuracy"
    uninterrupted, resumed, second, whole = interrupted_and_resumed(exp, tmp_path, headline, at=2)
    assert second.loop.step == 4 and resumed.steps == uninterrupted.steps == 4
    assert resumed.metrics == uninterrupted.metrics and headline in resumed.metrics
    a = second.bare_model.state_dict()
    saved = load_file(whole / "checkpoints" / "last" / "model.safetensors")
    assert len(saved) > 50 and all(torch.equal(saved[k], a[k]) for k in saved)  # tied embeddings are saved once
