"""Every registered component meets the contracts in mmreg.testing."""

from __future__ import annotations

import pytest
from PIL import Image

from mmreg.plugins import load_plugins
from mmreg.testing import check_augmenter, check_dataset, check_encoder, check_fusion, check_loss, check_peft, check_task

HOST = load_plugins()
DIM = 16


@pytest.mark.parametrize("name", HOST.registry("fusions").names())
def test_fusion_conformance(name):
    entry = HOST.registry("fusions").get(name)
    params = {"heads": 2} if "heads" in entry.params.model_fields else {}
    check_fusion(HOST.registry("fusions").build(name, params, dim=DIM), DIM)


@pytest.mark.parametrize("name", HOST.registry("encoders").names())
def test_encoder_conformance(name):
    captions = ["a small red circle", "a large blue square at the top"]
    encoder = HOST.registry("encoders").build(name, {}, captions=captions)
    images = [Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (64, 64), (30, 30, 200))]
    check_encoder(encoder, images, [*captions, "an unseen word"])


SYMMETRIC = {"infonce", "clip", "siglip", "multiview"}  # symmetric in images and texts by construction


@pytest.mark.parametrize("name", HOST.registry("losses").names())
def test_loss_conformance(name):
    check_loss(HOST.registry("losses").build(name, {}), symmetric=name in SYMMETRIC)


@pytest.mark.parametrize("name", HOST.registry("augmenters").names())
def test_augmenter_conformance(name):
    split = HOST.registry("datasets").build("shapes", {"train_size": 4, "val_size": 1}, seed=0).split("train")
    check_augmenter(HOST.registry("augmenters").build(name, {}, seed=0), list(split))


@pytest.mark.parametrize("name, params", [("shapes", {"train_size": 32, "val_size": 16}), ("digits", {})])
def test_dataset_conformance(name, params):
    check_dataset(lambda seed: HOST.registry("datasets").build(name, params, seed=seed))


@pytest.mark.parametrize(
    "name, params", [("freeze", {"towers": ["vision"]}), ("lora", {}), ("progressive", {"unit": "steps", "frozen_for": 2})]
)
def test_peft_conformance(name, params):
    captions = ["a small red circle", "a large blue square"]
    images = [Image.new("RGB", (32, 32), (200, 30, 30)), Image.new("RGB", (40, 30), (30, 30, 200))]
    strategies = HOST.registry("peft")
    check_peft(
        lambda: strategies.build(name, params, strategies=strategies),
        lambda: HOST.registry("encoders").build("clip", {"hidden_size": 32, "projection_dim": 32}, captions=captions),
        images,
        captions,
    )


TINY_EXPERIMENT = {
    "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32}, "model": {"dim": 32}, "fusion": {"name": "concat"},
    "dataset": {"name": "shapes", "train_size": 16, "val_size": 8}, "train": {"batch_size": 4},
}  # fmt: skip


@pytest.mark.parametrize("name, loss", [("retrieval", "infonce"), ("classification", "ce"), ("vqa", "bce"), ("captioning", "lm")])
def test_task_conformance(name, loss):
    assert name in HOST.registry("tasks")
    check_task({**TINY_EXPERIMENT, "task": name, "loss": {loss: {}}}, HOST)
