"""The data pipeline: uint8 pixels normalised on the device equal each encoder's own processor,
worker counts resolved from the CPUs, header-only checks of large splits, and samples that fail
to decode while training skipped, counted, named and capped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmreg.config import validate
from mmreg.data import MAX_WORKERS, resolve_workers
from mmreg.errors import ConfigError
from mmreg.pixels import normalize_pixels
from mmreg.plugins import load_plugins
from mmreg.testing import check_uint8_pixels

CAPTIONS = ["a red circle", "a blue square", "two green triangles"]
DUAL = {"vision": "tiny", "text": "tiny"}


def images() -> list[Image.Image]:
    """Noise of three sizes and aspect ratios (ViLT pads them into one batch), one of them grayscale."""
    rng = np.random.default_rng(0)
    shapes = [(40, 30), (23, 61), (64, 64)]
    out = [Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)) for h, w in shapes]
    out.append(Image.fromarray(rng.integers(0, 256, size=(33, 47), dtype=np.uint8)).convert("RGB"))
    return out


@pytest.mark.parametrize("name", ["clip", "blip", "vilt", "dual"])
def test_uint8_pixels_normalised_on_the_device_equal_the_encoders_own_processor(name):
    params = DUAL if name == "dual" else {}
    encoder = load_plugins().registry("encoders").build(name, params, captions=CAPTIONS)
    raw = encoder.pixel_inputs_uint8(images())
    assert raw is not None and raw["pixel_values"].dtype == torch.uint8  # a quarter of float32's bytes cross to the trainer
    check_uint8_pixels(encoder, images())  # normalised on the device == the encoder's own processor, to 1e-5
    ours = normalize_pixels(raw, encoder)
    assert ours["pixel_values"].dtype == torch.float32
    if "pixel_mask" in ours:  # ViLT: padding stays 0 after normalisation, as the processor pads after normalising
        padding = 1 - ours["pixel_mask"].unsqueeze(1)
        assert padding.sum() > 0 and (ours["pixel_values"] * padding).abs().max() == 0


def test_float_pixels_pass_unchanged_and_uint8_without_normalisation_is_refused():
    encoder = load_plugins().registry("encoders").build("clip", {}, captions=CAPTIONS)
    floats = encoder.pixel_inputs(images())
    assert normalize_pixels(floats, encoder)["pixel_values"] is floats["pixel_values"]
    encoder.image_normalization = lambda: None  # type: ignore[method-assign]
    with pytest.raises(ConfigError, match="no image_normalization"):
        normalize_pixels(encoder.pixel_inputs_uint8(images()), encoder)


def test_num_workers_auto_resolves_from_the_cpus_per_process():
    assert validate({}).data.num_workers == "auto"
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_workers("auto", cpu, cpus=64) == 0  # training on the CPU already uses every core
    assert resolve_workers("auto", cuda, processes=1, cpus=64) == MAX_WORKERS
    assert resolve_workers("auto", cuda, processes=4, cpus=16) == 3  # one core of each process's four trains
    assert resolve_workers("auto", cuda, processes=8, cpus=8) == 1
    assert resolve_workers(0, cuda, cpus=64) == 0  # 0 still means the main process
    assert resolve_workers(3, cpu) == 3
    with pytest.raises(Exception, match="num_workers"):
        validate({"data": {"num_workers": -1}})


# -- bad images at scale: header-only check, skipped while training, the cap ---------------------


def write_pairs(folder: Path, n: int = 24, truncated: bool = True, garbage: bool = False) -> Path:
    """n good PNGs, then one cut after its header (readable header, undecodable data) and/or one
    that is not an image at all; pairs.csv lists them all."""
    rng = np.random.default_rng(1)
    rows = ["image_path,caption"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        rows.append(f"{i}.png,noise number {i}")
    if truncated:
        Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).save(folder / "cut.png")
        data = (folder / "cut.png").read_bytes()
        (folder / "cut.png").write_bytes(data[: len(data) // 3])
        rows.append("cut.png,a picture cut short")
    if garbage:
        (folder / "junk.png").write_bytes(b"this is not an image at all" * 10)
        rows.append("junk.png,not a picture")
    (folder / "pairs.csv").write_text("\n".join(rows) + "\n")
    return folder / "pairs.csv"


def run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [
        "run", "--dataset", "files", "--set", f"dataset.train={tmp_path / 'pairs.csv'}", "--set", "dataset.val_fraction=0.2",
        "--runs-dir", str(tmp_path / "runs"), "--fusion", "none", "--set", "encoder.hidden_size=32",
        "--set", "encoder.projection_dim=32", "--max-steps", "4", "--batch-size", "4", "--device", "cpu",
    ]  # fmt: skip
    return subprocess.run([sys.executable, "-m", "mmreg", *args, *extra], capture_output=True, text=True, cwd=tmp_path, timeout=300)


def test_above_the_threshold_headers_are_checked_and_an_undecodable_image_is_skipped_counted_and_named(tmp_path):
    write_pairs(tmp_path)
    result = run(tmp_path, "--set", "data.full_check_max=4", "--set", "data.max_unreadable=0.25", "--set", "train.eval_every=1")
    assert result.returncode == 0, result.stderr
    assert "headers read before training" in result.stderr  # the progress output says which check ran
    summary = json.loads((next((tmp_path / "runs").iterdir()) / "summary.json").read_text())
    failed = summary["unreadable"]
    assert sum(split["count"] for split in failed.values()) == 1
    (name,) = [n for split in failed.values() for n in split["names"]]
    assert "pairs.csv row 25" in name and "cut.png" in name
    assert summary["train_size"] + summary["val_size"] == 25  # nothing was left out before training
    assert "failed to decode while loading and were skipped" in result.stdout and "cut.png" in result.stdout


def test_below_the_threshold_every_image_is_decoded_before_training(tmp_path):
    write_pairs(tmp_path)
    result = run(tmp_path)
    assert result.returncode == 2
    assert "cut.png is not a readable image" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "runs").exists()


def test_more_failures_than_the_cap_stop_the_run_with_exit_2_naming_the_cap(tmp_path):
    write_pairs(tmp_path)
    result = run(tmp_path, "--set", "data.full_check_max=4")  # the default cap, 1%, allows none of 25
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "data.max_unreadable=0.01" in last and "cut.png" in last


def test_collate_leaves_out_and_names_failed_samples_or_keeps_the_size_under_data_parallelism():
    from mmreg.badimages import Unreadable
    from mmreg.components import Sample
    from mmreg.data import UNREADABLE, Collate

    host = load_plugins()
    encoder = host.registry("encoders").build("clip", {}, captions=CAPTIONS)
    task = host.registry("tasks").build("retrieval")
    good = [Sample(image, caption) for image, caption in zip(images(), CAPTIONS, strict=False)]
    failed = Unreadable("pairs.csv row 7: image 7.png", "OSError: image file is truncated")
    items = [good[0], failed, good[1]]
    batch = Collate(encoder, task)(items)
    assert batch["pixel_values"].shape[0] == batch["input_ids"].shape[0] == 2
    assert batch[UNREADABLE] == [failed]
    same_size = Collate(encoder, task, keep_size=True)(items)
    assert same_size["pixel_values"].shape[0] == 3 and same_size[UNREADABLE] == [failed]
    assert "unreadable" not in Collate(encoder, task)(good)
