"""Every experiment file in experiments/ validates against the installed plugins, its search space too,
and runs one step through the real CLI as shipped, apart from its size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmreg.api import check_components, resolve
from mmreg.config import apply_overrides, load_experiment, read_file
from mmreg.plugins import load_plugins
from mmreg.space import Space

FILES = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.toml"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_experiment_file_resolves(path):
    host = load_plugins()
    exp = resolve(load_experiment(path), host)
    check_components(exp, host)
    assert exp.encoder.params and exp.loss
    raw = read_file(path)
    if "search" in raw:  # every value the space can draw is checked against the parameters' own schemas
        space = Space(raw.pop("search"), apply_overrides(raw, []), host)
        assert space.dims


# -- every file runs as shipped, apart from size: one optimisation step and one evaluation on tiny data


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CLIP checkpoint directory as `save_pretrained` writes it (tiny, random), for files naming a hub checkpoint."""
    host = load_plugins()
    encoder = host.registry("encoders").build("clip", {"hidden_size": 32, "projection_dim": 32}, captions=["a red circle", "a blue square"])
    where = tmp_path_factory.mktemp("clip")
    encoder.model.save_pretrained(where)
    encoder.save_preprocessing(where)
    return where


def image_caption_csv(where: Path, rows: int = 24) -> Path:
    """A run_clip.py-style CSV (image_path, caption) of real PNG files beside it."""
    from PIL import Image

    lines = ["image_path,caption"]
    for i in range(rows):
        colour = ((40 * i) % 255, (90 + 30 * i) % 255, 160)
        Image.new("RGB", (24, 24), colour).save(where / f"img{i}.png")
        lines.append(f"img{i}.png,a square of colour {i}")
    (where / "train.csv").write_text("\n".join(lines) + "\n")
    return where / "train.csv"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_experiment_file_runs_one_step(path, tmp_path, tiny_clip):
    from test_cli import cli

    raw = read_file(path)
    overrides = ["train.max_steps=1", "train.batch_size=8", "train.eval_batch_size=32", "train.device=cpu", "data.num_workers=0"]
    dataset = raw.get("dataset", {}).get("name", "shapes")
    if dataset == "shapes":  # one step of batch 8 times the file's accumulation
        overrides += [f"dataset.train_size={max(16, 8 * raw.get('train', {}).get('grad_accum', 1))}", "dataset.val_size=8"]
    if dataset == "files":
        overrides += [f"dataset.train={image_caption_csv(tmp_path)}"]
    if raw.get("peft", {}).get("name") == "progressive":  # its tower stays frozen for an epoch (2 steps here): train past it
        overrides += ["train.max_steps=3"]
    if raw.get("encoder", {}).get("pretrained"):
        overrides += [f"encoder.pretrained={tiny_clip}"]  # the hub checkpoint it names cannot be downloaded here
    flags = [arg for item in overrides for arg in ("--set", item)]
    result = cli("run", str(path), *flags, "--runs-dir", "runs", "--json", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["steps"] >= 1 and summary["best"]["value"] is not None
