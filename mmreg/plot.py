"""A run's curves as one PNG: training loss (and learning rate) and every validation metric against step."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

NOT_METRICS = frozenset({"step", "epoch", "split"})


def read_metrics(metrics_path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; lines that are not a JSON object (a run killed mid-write) are skipped."""
    records: list[dict[str, Any]] = []
    try:
        text = Path(metrics_path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return records
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def series(records: list[dict[str, Any]], split: str) -> dict[str, tuple[list[float], list[float]]]:
    """``{metric: (steps, values)}`` of the records of one split, in file order; non-numeric values left out."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for record in records:
        if record.get("split") != split:
            continue
        step = _number(record.get("step"))
        if step is None:
            continue
        for key, value in record.items():
            number = _number(value)
            if key in NOT_METRICS or number is None:
                continue
            steps, values = out.setdefault(key, ([], []))
            steps.append(step)
            values.append(number)
    return out


def plot_curves(metrics_path: Path, out: Path) -> Path | None:
    """Write a PNG of the curves in ``metrics_path`` to ``out`` (atomically); None when there is nothing to plot.

    The first panel holds the training loss (and each loss term) with the learning
    rate on a twin axis; the second every validation metric. matplotlib is imported
    here, and drawn without pyplot, so no global backend is touched.
    """
    records = read_metrics(Path(metrics_path))
    train = series(records, "train")
    val = series(records, "val")
    lr = train.pop("lr", None)
    train = {k: v for k, v in train.items() if k == "loss" or k.startswith("loss/")}
    if not any(any(math.isfinite(x) for x in vals) for _, vals in train.values()) and not val:
        return None

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = int(bool(train)) + int(bool(val))
    fig = Figure(figsize=(8, 3.2 * panels), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(panels, 1, squeeze=False)[:, 0]
    i = 0
    if train:
        ax = axes[i]
        i += 1
        for key, (steps, values) in sorted(train.items(), key=lambda kv: kv[0] != "loss"):
            main = key == "loss"
            ax.plot(steps, values, label=key, linewidth=1.8 if main else 1.0, alpha=1.0 if main else 0.7, marker="." if len(steps) < 3 else None)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_title("training")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if lr is not None:
            twin = ax.twinx()
            (line,) = twin.plot(lr[0], lr[1], color="tab:gray", linestyle="--", linewidth=1.0, label="lr")
            twin.set_ylabel("learning rate")
            twin.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
            handles.append(line)
            labels.append("lr")
        ax.legend(handles, labels, loc="upper right", fontsize="small")
    if val:
        ax = axes[i]
        for key, (steps, values) in val.items():
            ax.plot(steps, values, label=key, marker="o", markersize=3)
        ax.set_xlabel("step")
        ax.set_ylabel("metric")
        ax.set_title("validation")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small", ncol=3 if len(val) > 4 else 1)

    from .runs import atomic_path

    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return out


__all__ = ["plot_curves", "read_metrics", "series"]
