"""Captioning scores against the data set's own strings: through the real CLI, on captions the test
writes with validation words that training never saw, mmreg's BLEU-4 and CIDEr-D equal
pycocoevalcap's on the raw strings; and a prompt whose words never occur in training works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from test_cli import cli

TRAIN = ["a red square", "a blue square", "a green circle", "a red circle", "a blue circle", "a green square", "a red dot", "a blue dot"]
VAL = {  # two references per image, with words absent from the training captions
    "v0": ["a red square drawn by hand", "crimson box sketched"],
    "v1": ["a blue circle drawn by hand", "azure ring sketched"],
    "v2": ["a green dot painted", "emerald speck painted"],
}
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


def data(where: Path) -> list[str]:
    rows = ["image_path,caption"]
    for i, caption in enumerate(TRAIN):
        Image.new("RGB", (32, 32), COLOURS[caption.split()[1]]).save(where / f"t{i}.png")
        rows.append(f"t{i}.png,{caption}")
    (where / "train.csv").write_text("\n".join(rows) + "\n")
    rows = ["image_path,caption"]
    for name, captions in VAL.items():
        Image.new("RGB", (32, 32), COLOURS[captions[0].split()[1]]).save(where / f"{name}.png")
        rows += [f"{name}.png,{c}" for c in captions]
    (where / "val.csv").write_text("\n".join(rows) + "\n")
    return ["--task", "captioning", "--fusion", "none", "--loss", "lm", "--dataset", "files", "--set", "dataset.train=train.csv",
            "--set", "dataset.val=val.csv", "--set", "encoder.hidden_size=32", "--set", "encoder.projection_dim=32", "--set", "model.dim=32",
            "--set", "task.max_new_tokens=6", "--batch-size", "4", "--max-steps", "4", "--device", "cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("captions")
    result = cli("run", *data(where), "--set", "task.prompt=an image of", "--runs-dir", "runs", "--name", "c", cwd=where, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return where


def test_bleu_and_cider_equal_pycocoevalcap_on_the_raw_validation_strings(trained):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    scored = cli("eval", "c", "--checkpoint", "final", "--device", "cpu", "--json", cwd=trained)
    assert scored.returncode == 0, scored.stderr
    metrics = json.loads(scored.stdout)
    images = [str(trained / f"{name}.png") for name in VAL]
    predicted = cli("predict", "c", *images, "--checkpoint", "final", "--device", "cpu", "--json", cwd=trained)
    assert predicted.returncode == 0, predicted.stderr
    prompt = "an image of"
    generated = {}
    for name, item in zip(VAL, json.loads(predicted.stdout), strict=True):
        caption = item["predictions"][0]["caption"]
        assert caption.startswith(prompt)  # the prompt's words never occur in training, and still work
        generated[name] = [caption[len(prompt) :].strip()]
    references = {name: list(captions) for name, captions in VAL.items()}  # lower case, no punctuation: as written
    bleu, _ = Bleu(4).compute_score(references, generated, verbose=0)
    cider, _ = Cider().compute_score(references, generated)
    assert metrics["bleu4"] == pytest.approx(bleu[3], abs=1e-6)
    assert metrics["cider"] == pytest.approx(cider, abs=1e-6)
    assert metrics["bleu4"] < 1.0  # the unseen words count as misses, not as words that vanished
