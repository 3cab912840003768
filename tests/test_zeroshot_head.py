"""classification's head_init=zeroshot: before any step the head predicts as the zeroshot task does
on the same prompts (WiSE-FT's zero-shot head); refused in one line for a fusion that mixes modalities."""

from __future__ import annotations

import pytest
import torch
from test_cli import cli, one_error_line

from mmreg.api import collate_for, prepare
from mmreg.config import validate
from mmreg.data import make_loader
from mmreg_plugins.tasks.zeroshot import ClassScorer

TEMPLATES = ["a photo of a {c}.", "a {c} shape."]
EXP = {
    "task": {"name": "classification", "head_init": "zeroshot", "templates": TEMPLATES},
    "loss": {"ce": {}},
    "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32, "layers": 1},
    "fusion": {"name": "none"},
    "dataset": {"name": "shapes", "train_size": 32, "val_size": 32, "image_size": 32},
    "model": {"dim": 32},
    "train": {"batch_size": 8, "eval_batch_size": 32, "device": "cpu"},
}


def test_a_zeroshot_head_predicts_as_the_zeroshot_task_before_any_step():
    p = prepare(validate(EXP))
    model = p.model.eval()
    batch = next(iter(make_loader(p.val_split, collate_for(p), 32, shuffle=False, seed=0)))
    with torch.no_grad():
        features = model.encode(batch)
        logits = p.task.forward(model.head, model.fusion, features, batch)["logits"]
        zero_shot = ClassScorer(model, p.task.classes, TEMPLATES, "fusion")(features.image)
    assert torch.equal(logits.argmax(-1), zero_shot.argmax(-1))
    scale = float(model.encoder.logit_scale.exp())
    torch.testing.assert_close(logits, scale * zero_shot, rtol=1e-4, atol=1e-4)  # the same scores, times the logit scale
    random = prepare(validate({**EXP, "task": {"name": "classification"}}))
    assert not torch.equal(random.model.head.weight, model.head.weight)


def test_a_fusion_that_mixes_the_modalities_is_refused_in_one_line(tmp_path):
    line = one_error_line(cli("run", "--task", "classification", "--loss", "ce", "--fusion", "gated", "--set", "task.head_init=zeroshot",
                              "--max-steps", "1", "--runs-dir", "runs", cwd=tmp_path))  # fmt: skip
    assert "task.head_init=zeroshot" in line and "use --fusion none" in line
    assert not (tmp_path / "runs").exists()


def test_head_init_is_checked_by_the_schema():
    from mmreg.errors import InvalidParams

    with pytest.raises(InvalidParams, match="head_init"):
        prepare(validate({**EXP, "task": {"name": "classification", "head_init": "pretrained"}}))
