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
    rate on a twin axis; the second the gradient norm of each part (``grad_norm/PART``:
    towers, fusion, head; log scale), where logged; the third, where a run has them, modality
    balance: each modality's own validation accuracy (``NAME/image_only``, ``NAME/text_only``)
    beside the fused ``NAME``, and the balancers' numbers (``balance/...``) dashed on a twin axis;
    the last every validation metric.
    matplotlib is imported here, and drawn without pyplot, so no global backend is touched.
    """
    records = read_metrics(Path(metrics_path))
    train = series(records, "train")
    val = series(records, "val")
    lr = train.pop("lr", None)
    norms = {k.partition("/")[2]: v for k, v in train.items() if k.startswith("grad_norm/")}
    balancers = {k.partition("/")[2]: v for k, v in train.items() if k.startswith("balance/")}
    alone = sorted({k.rpartition("/")[0] for k in val if k.endswith(("/image_only", "/text_only"))})
    balance = {k: val[k] for name in alone for k in (name, f"{name}/image_only", f"{name}/text_only") if k in val}
    train = {k: v for k, v in train.items() if k == "loss" or k.startswith("loss/")}
    if not any(any(math.isfinite(x) for x in vals) for _, vals in train.values()) and not val:
        return None

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = int(bool(train)) + int(bool(norms)) + int(bool(balance)) + int(bool(val))
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
    if norms:
        ax = axes[i]
        i += 1
        for key, (steps, values) in norms.items():
            ax.plot(steps, values, label=key, linewidth=1.2, marker="." if len(steps) < 3 else None)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("gradient norm (before clipping)")
        ax.set_title("gradient norm per part")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize="small")
    if balance:
        ax = axes[i]
        i += 1
        for key, (steps, values) in balance.items():
            ax.plot(steps, values, label=key, marker="o", markersize=3, linewidth=1.8 if key in alone else 1.2)
        ax.set_xlabel("step")
        ax.set_ylabel("validation accuracy")
        ax.set_title("modality balance: each modality alone and fused")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if balancers:
            twin = ax.twinx()
            for key, (steps, values) in balancers.items():
                (line,) = twin.plot(steps, values, linestyle="--", linewidth=0.9, alpha=0.8, label=key)
                handles.append(line)
                labels.append(key)
            twin.set_ylabel("balancer (training steps)")
        ax.legend(handles, labels, loc="best", fontsize="small")
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


def _mean_band(curves: list[tuple[list[float], list[float]]]) -> tuple[list[float], list[float], list[float], list[float]]:
    """Steps every curve has, with the mean, minimum and maximum of the curves' values there."""
    tables = [dict(zip(steps, values, strict=True)) for steps, values in curves]
    steps = sorted(set.intersection(*(set(t) for t in tables)))
    rows = [[t[s] for t in tables] for s in steps]
    return steps, [math.fsum(r) / len(r) for r in rows], [min(r) for r in rows], [max(r) for r in rows]


def plot_comparison(groups: list[tuple[str, list[Path]]], metric: str, out: Path) -> Path:
    """One PNG of runs side by side: the training loss and ``metric`` (the headline) against step.

    ``groups``: ``(legend label, the metrics.jsonl of each run)``; a group of several runs (seeds)
    is drawn as its mean over the steps all its runs have, with a band from their minimum to their
    maximum. Written atomically; returns ``out``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6.4), layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, metric_ax = fig.subplots(2, 1)
    for (label, paths), color in zip(groups, [f"C{i % 10}" for i in range(len(groups))], strict=True):
        records = [read_metrics(p) for p in paths]
        for ax, split, key in ((loss_ax, "train", "loss"), (metric_ax, "val", metric)):
            curves = [c for c in (series(r, split).get(key) for r in records) if c]
            if not curves:
                continue
            steps, mean, low, high = _mean_band(curves)
            shown = f"{label} ({len(curves)} runs)" if len(curves) > 1 else label
            ax.plot(steps, mean, color=color, label=shown, marker="." if len(steps) < 3 else None)
            if len(curves) > 1:
                ax.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
    for ax, title, ylabel in ((loss_ax, "training loss", "loss"), (metric_ax, f"validation {metric}", metric)):
        ax.set_title(title + " (groups: mean, band from min to max over seeds)")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize="small")

    from .runs import atomic_path

    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return out


__all__ = ["plot_comparison", "plot_curves", "read_metrics", "series"]
