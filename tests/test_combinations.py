"""Every encoder with every fusion, for every task: trains, and every trainable weight learns."""

from __future__ import annotations

import itertools
import re

import pytest
import torch

import mmreg
from mmreg import hookimpl
from mmreg.api import collate_for, prepare
from mmreg.components import Encoder
from mmreg.config import validate
from mmreg.data import AugmentedSplit, make_loader
from mmreg.errors import IncompatibleParts
from mmreg.plugins import load_plugins

ENCODERS = {
    "clip": {"name": "clip", "hidden_size": 32, "projection_dim": 24, "layers": 1},
    "dual": {"name": "dual"},
}
FUSIONS = ["none", "concat", "cross-attention", "gated"]
TASKS = {"retrieval": {"infonce": {}}, "classification": {"ce": {}}}


@pytest.fixture(scope="module")
def host():
    return load_plugins()


def experiment(encoder: str, fusion: str, task: str, **extra) -> dict:
    return {
        "encoder": ENCODERS[encoder],
        "fusion": {"name": fusion},
        "loss": TASKS.get(task, {"ce": {}}),
        "task": task,
        "dataset": {"name": "shapes", "train_size": 16, "val_size": 8, "image_size": 32},
        "model": {"dim": 32},
        "train": {"batch_size": 8},
        **extra,
    }


def train_steps(p, steps: int) -> list[float]:
    """Run ``steps`` optimizer steps; after the first backward, every trainable weight must have a gradient."""
    model = p.model.train()
    loader = make_loader(AugmentedSplit(p.train_split, p.augmenters, 0), collate_for(p), 8, shuffle=True, seed=0, drop_last=True)
    optimizer = torch.optim.AdamW([t for t in model.parameters() if t.requires_grad], lr=1e-3)
    losses = []
    for step, batch in zip(range(steps), itertools.cycle(loader)):
        loss, _ = model(batch)
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            silent = [n for n, t in model.named_parameters() if t.requires_grad and (t.grad is None or not t.grad.abs().sum() > 0)]
            assert not silent, f"trainable weights without gradient: {silent[:5]}"
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_every_pair_trains_and_every_weight_learns(host, encoder, fusion, task):
    p = prepare(validate(experiment(encoder, fusion, task)), host)
    assert p.task.name == task
    losses = train_steps(p, 3)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(t.numel() for t in p.model.parameters() if t.requires_grad) > 0


def test_vqa_trains_on_shapes(host, tmp_path):
    summary = mmreg.run(
        experiment("clip", "cross-attention", "vqa", runs_dir=str(tmp_path), train={"batch_size": 8, "max_steps": 3}),
        host=host,
        progress=False,
    )
    assert summary["task"] == "vqa" and 0.0 <= summary["metrics"]["vqa_accuracy"] <= 1.0
    assert "recall@1" not in summary["metrics"]  # no contrastive loss: nothing trained the scores
    classes = (tmp_path / summary["run_dir"].split("/")[-1] / "classes.json").read_text()
    assert '"red"' in classes or '"small"' in classes


def test_vqa_head_fits_a_fixed_batch(host):
    """The whole path (questions as text, answers as targets, ViLT head) can learn: overfit one batch."""
    p = prepare(validate(experiment("clip", "gated", "vqa")), host)
    batch = collate_for(p)(list(p.train_split[:8]))
    assert batch["labels"].shape == (8, len(p.classes)) and p.classes[batch["labels"][0].argmax()] == p.train_split[0].answer
    optimizer = torch.optim.AdamW(p.model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss, _ = p.model(batch)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first


def test_the_default_task_follows_the_losses(host):
    assert prepare(validate({**experiment("clip", "none", "retrieval"), "task": None}), host).task.name == "retrieval"
    both = {**experiment("clip", "none", "classification"), "task": None, "loss": {"infonce": {"weight": 0.7}, "ce": {"weight": 0.3}}}
    p = prepare(validate(both), host)
    assert p.task.name == "classification" and p.model.head is not None and "scores" in p.model.needs


class PooledOnly(Encoder):
    """A third-party encoder that gives no token sequences."""

    gives_tokens = False
    built = 0

    def __init__(self, *, captions):
        PooledOnly.built += 1
        super().__init__()


@hookimpl
def mmreg_register_encoders(register):
    register("pooled-only", PooledOnly)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"encoder": {"name": "pooled-only"}, "fusion": {"name": "gated"}}, "fusion 'gated' needs token sequences but encoder 'pooled-only'"),
        ({"task": "retrieval", "loss": {"ce": {}}}, "loss 'ce' reads head logits but task 'retrieval' has no head"),
        ({"task": "vqa", "loss": {"infonce": {}}}, "task 'vqa' trains a head but no chosen loss (infonce) reads its logits"),
        ({"loss": {"multiview": {}}}, "loss 'multiview' needs two augmented views of each image but no augmenter makes them"),
        ({"encoder": {"name": "dual"}, "loss": {"clip": {}}}, "loss 'clip' uses the encoder's own logit scale but encoder 'dual' has none"),
    ],
)
def test_impossible_combinations_are_refused_before_any_weight(change, message):
    host = load_plugins()
    host.register_object("third-party", __import__(__name__, fromlist=["x"]))
    PooledOnly.built = 0
    with pytest.raises(IncompatibleParts, match=re.escape(message)):
        prepare(validate({**experiment("clip", "gated", "retrieval"), **change}), host)
    assert PooledOnly.built == 0


def test_weighted_losses_add_up(host):
    """The docs' domain adaptation: 0.7 * CLIP's contrastive loss + 0.3 * classification."""
    exp = {**experiment("clip", "none", "classification"), "loss": {"clip": {"weight": 0.7}, "ce": {"weight": 0.3}}}
    p = prepare(validate(exp), host)
    batch = collate_for(p)(list(p.train_split[:8]))
    total, parts = p.model(batch)
    assert set(parts) == {"clip", "ce"}
    torch.testing.assert_close(total, 0.7 * parts["clip"] + 0.3 * parts["ce"])
    total.backward()
    assert p.model.encoder.logit_scale.grad is not None  # the clip loss trains CLIP's own scale


def test_multiview_trains_with_two_different_views(host):
    exp = {**experiment("clip", "gated", "retrieval"), "loss": {"multiview": {}}, "augment": {"multiview": {}}}
    p = prepare(validate(exp), host)
    losses = train_steps(p, 2)
    assert all(torch.isfinite(torch.tensor(losses)))
    sample = AugmentedSplit(p.train_split, p.augmenters, 0)[0]
    assert sample.views is not None and sample.views[0].tobytes() != sample.views[1].tobytes()
