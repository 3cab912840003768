"""`freeze` (a linear probe) and `peft` (any tower method by name)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mmreg.api import prepare
from mmreg.config import validate
from mmreg.errors import ConfigError


def experiment(peft: dict) -> dict:
    return {
        "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32, "layers": 1},
        "fusion": {"name": "none"},
        "peft": peft,
        "dataset": {"name": "shapes", "train_size": 16, "val_size": 8, "image_size": 32},
        "model": {"dim": 32},
        "train": {"batch_size": 8},
    }


def trainable(peft: dict) -> dict[str, list[str]]:
    model = prepare(validate(experiment(peft))).model
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    return {
        "vision": [n for n in names if ".vision_model." in n],
        "text": [n for n in names if ".text_model." in n],
        "rest": [n for n in names if ".vision_model." not in n and ".text_model." not in n],
    }


def test_freeze_trains_only_what_lies_outside_the_towers() -> None:
    both = trainable({"name": "freeze"})
    assert both["vision"] == both["text"] == []
    assert "encoder.model.visual_projection.weight" in both["rest"] and "encoder.model.text_projection.weight" in both["rest"]
    one = trainable({"name": "freeze", "towers": ["vision"]})
    assert one["vision"] == [] and one["text"]


@pytest.mark.parametrize(
    ("settings", "marker"),
    [
        ({"method": "ia3"}, "ia3_l"),
        ({"method": "loha", "vision": {"r": 4}, "text": {"r": 4}}, "hada_"),
        ({"method": "lokr", "vision": {"r": 4}, "text": {"r": 4}}, "lokr_"),
        ({"method": "lora", "vision": {"r": 4, "use_dora": True}, "text": "freeze"}, "lora_"),
    ],
)
def test_peft_methods_by_name_adapt_the_towers(settings: dict, marker: str) -> None:
    got = trainable({"name": "peft", **settings})
    assert got["vision"] and all(marker in n for n in got["vision"]), "only the method's own weights train in the tower"
    if settings.get("vision", {}).get("use_dora"):
        assert any("lora_magnitude_vector" in n for n in got["vision"]), "DoRA adds a magnitude vector"


def test_an_unknown_peft_method_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"peft.method 'ia4' is not a peft method .*did you mean 'ia3'.*\(allowed: .*loha.*lora"):
        prepare(validate(experiment({"name": "peft", "method": "ia4"})))


def test_bad_peft_settings_exit_2_naming_the_setting(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mmreg", "run", "--peft", "lora", "--set", "peft.vision.r=0", "--max-steps", "1"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: peft.vision.r must be a whole number of at least 1 (got 0); the docs use 8 or 16"
    assert not (tmp_path / "runs").exists()
