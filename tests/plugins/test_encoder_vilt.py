"""`vilt`: a single-stream encoder that gives exactly transformers' ViLT outputs, heads included."""

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import mmreg
from mmreg.api import collate_for, prepare
from mmreg.config import validate
from mmreg.errors import IncompatibleParts
from mmreg.pixels import normalize_pixels
from mmreg.plugins import load_plugins
from mmreg.text import build_tokenizer
from mmreg_plugins.tasks.vqa import answer_vocabulary

VILT = {
    "seed": 3,
    "task": "vqa",
    "loss": {"bce": {}},
    "encoder": {"name": "vilt"},
    "fusion": {"name": "none"},
    "dataset": {"name": "shapes", "train_size": 32, "val_size": 16},
    "train": {"max_steps": 3, "batch_size": 8, "eval_batch_size": 16},
}


@pytest.fixture(scope="module")
def qa_dir(tmp_path_factory):
    """A tiny ViltForQuestionAnswering saved with its tokenizer and processor; its id2label is
    the shapes answer vocabulary but for one answer, which the run must add."""
    from transformers import ViltConfig, ViltForQuestionAnswering, ViltImageProcessor

    host = load_plugins()
    dataset = host.registry("datasets").build("shapes", {"train_size": 32, "val_size": 16}, seed=3)
    answers = answer_vocabulary(dataset.answers("train"), 1)[:-1]
    tokenizer = build_tokenizer(dataset.texts("train", "question"), 40)
    config = ViltConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=40, image_size=64, patch_size=16, num_labels=len(answers),
        id2label=dict(enumerate(answers)), label2id={a: i for i, a in enumerate(answers)}, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = ViltForQuestionAnswering(config).eval()
    path = tmp_path_factory.mktemp("vilt-vqa")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    ViltImageProcessor(size={"shortest_edge": 64}).save_pretrained(path)
    return path, answers, model


def padded_batch(p):
    """Two shapes questions on images of different sizes: the processor pads one of them."""
    samples = list(p.val_split[:2])
    samples[1] = type(samples[1])(**{**samples[1].__dict__, "image": samples[1].image.resize((96, 40))})
    return samples, collate_for(p)(samples)


def test_same_logits_and_loss_as_transformers_on_a_padded_batch(qa_dir):
    path, answers, reference = qa_dir
    p = prepare(validate({**VILT, "encoder": {"name": "vilt", "pretrained": str(path)}}), load_plugins())
    p.model.eval()
    samples, batch = padded_batch(p)
    assert batch["pixel_mask"].shape[0] == 2 and not bool(batch["pixel_mask"].all())  # padding happened
    normalised = normalize_pixels(batch, p.model.encoder)  # the batch carries uint8 pixels; the model normalises them
    inputs = {k: normalised[k] for k in ("input_ids", "attention_mask", "pixel_values", "pixel_mask")}
    with torch.no_grad():
        step = p.model.step(batch)
        expected = reference(**inputs, labels=batch["labels"][:, : len(answers)])
    assert p.classes[: len(answers)] == answers and len(p.classes) == len(answers) + 1
    assert torch.allclose(step.logits[:, : len(answers)], expected.logits, atol=1e-5)
    # ViLT's loss over its own answers: our bce on the same logits and soft scores
    ours = p.model.losses["bce"](type(step)(step.image, step.text, logits=step.logits[:, : len(answers)], labels=batch["labels"][:, : len(answers)]))
    assert ours.item() == pytest.approx(expected.loss.item(), rel=1e-5)


def test_a_run_from_a_vqa_checkpoint_reuses_its_id2label(qa_dir, tmp_path):
    path, answers, _ = qa_dir
    summary = mmreg.run({**VILT, "encoder": {"name": "vilt", "pretrained": str(path)}, "runs_dir": str(tmp_path)}, progress=False)
    classes = json.loads((tmp_path / summary["run_dir"].split("/")[-1] / "classes.json").read_text())
    assert classes[: len(answers)] == answers and len(classes) == len(answers) + 1


def test_patch_sampling_follows_the_seed(tmp_path):
    exp = {**VILT, "encoder": {"name": "vilt", "max_image_length": 4}}
    runs = [mmreg.run({**exp, "runs_dir": str(tmp_path / str(i))}, progress=False) for i in (0, 1)]
    weights = [load_file(next((tmp_path / str(i)).rglob("model.safetensors"))) for i in (0, 1)]
    assert runs[0]["metrics"] == runs[1]["metrics"]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    p = prepare(validate(exp), load_plugins())
    assert p.model.encoder.model.config.max_image_length == 4
    from transformers import ViltModel

    p.model.encoder.export(tmp_path / "export")
    exported = ViltModel.from_pretrained(tmp_path / "export")
    assert exported.config.max_image_length == 4 and torch.equal(exported.embeddings.patch_embeddings.projection.weight, p.model.encoder.model.embeddings.patch_embeddings.projection.weight)


def test_vilt_processor_sizes():
    from transformers import ViltImageProcessor

    from mmreg_plugins.encoders.vilt import ViltEncoder

    encoder = ViltEncoder.__new__(ViltEncoder)
    encoder.image_processor = ViltImageProcessor()  # ViLT's defaults: shortest edge 384, longest <= 640
    out = encoder.pixel_inputs([Image.new("RGB", (900, 300)), Image.new("RGB", (300, 300))])
    h, w = out["pixel_values"].shape[-2:]
    assert h % 32 == 0 and w % 32 == 0 and max(h, w) <= 640 and min(h, w) == 384
    assert out["pixel_mask"][1, :, :384].all() and not out["pixel_mask"][1, :, 384:].any()  # the square image padded on the right


def test_a_separate_fusion_is_refused_before_any_weight():
    with pytest.raises(IncompatibleParts, match="single-stream.*use --fusion none"):
        prepare(validate({**VILT, "fusion": {"name": "gated"}}), load_plugins())
