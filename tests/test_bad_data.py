"""Bad data through the real CLI: one line naming file and row, exit 2, no run directory; or skipped and counted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY = ["--set", "encoder.hidden_size=32", "--set", "encoder.projection_dim=32", "--fusion", "none"]
SHORT = ["--max-steps", "2", "--batch-size", "2", "--set", "dataset.val_fraction=0.3", "--device", "cpu"]


def write_png(path: Path, seed: int) -> None:
    """A real PNG of noise, big enough that half its bytes lose image data."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def write_csv(folder: Path, bad_row: str | None = None) -> Path:
    """Ten good rows, then ``bad_row`` if given: row 11."""
    lines = ["image_path,caption"]
    for i in range(10):
        write_png(folder / f"{i}.png", i)
        lines.append(f"{i}.png,noise number {i}")
    if bad_row is not None:
        lines.append(bad_row)
    path = folder / "pairs.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(tmp_path: Path, train: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["run", "--dataset", "files", "--set", f"dataset.train={train}", "--runs-dir", str(tmp_path / "runs")]
    return subprocess.run(
        [sys.executable, "-m", "mmreg", *args, *TINY, *SHORT, *extra], check=False, capture_output=True, text=True, cwd=tmp_path
    )


def empty_file(folder: Path) -> tuple[Path, str]:
    path = folder / "pairs.csv"
    path.write_text("")
    return path, f"{path} has no rows"


def no_caption_column(folder: Path) -> tuple[Path, str]:
    write_png(folder / "0.png", 0)
    path = folder / "pairs.csv"
    path.write_text("image_path,text\n0.png,noise\n")
    return path, f"{path} row 1: no column 'caption' (columns: image_path, text)"


def missing_image(folder: Path) -> tuple[Path, str]:
    path = write_csv(folder, "gone.png,an image that is not there")
    return path, f"{path} row 11: image {folder / 'gone.png'} not found"


def truncated_png(folder: Path) -> tuple[Path, str]:
    write_png(folder / "cut.png", 99)
    data = (folder / "cut.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    path = write_csv(folder, "cut.png,half an image")
    return path, f"{path} row 11: image {folder / 'cut.png'} is not a readable image ("


@pytest.mark.parametrize("write", [empty_file, no_caption_column, missing_image, truncated_png])
def test_bad_data_is_one_line_exit_2_and_no_run(tmp_path, write):
    train, expected = write(tmp_path)
    result = run(tmp_path, train)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.stderr, result.stderr
    assert expected in lines[0]
    assert not (tmp_path / "runs").exists()


def test_skip_bad_skips_and_counts_the_missing_image(tmp_path):
    train = write_csv(tmp_path, "gone.png,an image that is not there")
    result = run(tmp_path, train, "--set", "data.skip_bad=true", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert sum(summary["skipped"].values()) == 1
    assert summary["train_size"] + summary["val_size"] == 10
