"""`mmreg.plot.plot_curves`: a metrics.jsonl to a PNG of the training and validation curves."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from mmreg.plot import plot_curves, read_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_metrics(path: Path) -> None:
    lines = []
    for step in range(10, 101, 10):
        lines.append({"step": step, "epoch": step // 40, "split": "train", "loss": 3.0 / step**0.5, "lr": 1e-3 * (1 - step / 200)})
        if step % 50 == 0:
            lines.append({"step": step, "split": "val", "recall@1": step / 200, "recall@5": step / 110, "accuracy": 0.5})
    text = "".join(json.dumps(line) + "\n" for line in lines)
    text += '{"step": 110, "epoch": 2, "split": "tra'  # a run killed in the middle of a line
    path.write_text(text)


def test_train_and_val_curves_make_a_png(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    write_metrics(metrics)
    assert len(read_metrics(metrics)) == 12  # the truncated line is skipped

    out = plot_curves(metrics, tmp_path / "plots" / "curves.png")
    assert out == tmp_path / "plots" / "curves.png"
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        width, height = image.size
        assert width > 0 and height > 0
        assert height > 400  # two panels: training and validation
    assert [p.name for p in out.parent.iterdir()] == ["curves.png"], "a temporary file was left behind"


def test_train_only_curves_make_a_png(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps({"step": 1, "epoch": 0, "split": "train", "loss": 1.0}) + "\n")
    out = plot_curves(metrics, tmp_path / "curves.png")
    assert out is not None and out.read_bytes()[:8] == PNG_SIGNATURE


def test_nothing_to_plot_gives_none(tmp_path):
    empty = tmp_path / "metrics.jsonl"
    empty.write_text("")
    assert plot_curves(empty, tmp_path / "curves.png") is None
    assert not (tmp_path / "curves.png").exists()

    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text('not json\n{"step": 3, "split": "tr\n[1, 2]\n')
    assert plot_curves(garbage, tmp_path / "curves.png") is None
    assert plot_curves(tmp_path / "missing.jsonl", tmp_path / "curves.png") is None
    assert not (tmp_path / "curves.png").exists()


def test_an_existing_plot_is_replaced(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    write_metrics(metrics)
    out = tmp_path / "curves.png"
    out.write_bytes(b"old")
    assert plot_curves(metrics, out) == out
    assert out.read_bytes()[:8] == PNG_SIGNATURE


def test_modality_balance_gets_its_own_panel(tmp_path):
    """Each modality's own accuracy beside the fused one, and a balancer's coefficients, make a panel of
    their own: the figure is one panel (320 px) taller than the same run without them."""
    heights = []
    for balance in (False, True):
        lines = []
        for step in (10, 20):
            train = {"step": step, "split": "train", "loss": 1.0 / step, "grad_norm/vision": 0.1, "grad_norm/text": 2.0}
            val = {"step": step, "split": "val", "accuracy": 0.5}
            if balance:
                train.update({"balance/ogm_ge/coeff_image": 1.0, "balance/ogm_ge/coeff_text": 0.3})
                val.update({"accuracy/image_only": 0.2, "accuracy/text_only": 0.6})
            lines += [train, val]
        metrics = tmp_path / f"{balance}.jsonl"
        metrics.write_text("".join(json.dumps(line) + "\n" for line in lines))
        out = plot_curves(metrics, tmp_path / f"{balance}.png")
        with Image.open(out) as image:
            heights.append(image.size[1])
    assert heights[1] - heights[0] == 320
