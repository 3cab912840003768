"""Runs grouped by every setting but the seed: each metric as the mean, standard deviation and 95%
Student-t interval of its group, and a verdict between two groups on whether a difference is beyond
seed noise (paired by seed where both groups ran the same seeds, Welch's t otherwise)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .history import IGNORED_KEYS, RunRecord
from .tables import flatten, format_value

CONFIDENCE = 0.95
SEED = "seed"
TRACKING = "track."  # where a run is logged says nothing about what it computed


@dataclass(frozen=True)
class Spread:
    """``n`` values: their mean, sample standard deviation (n - 1) and the 95% Student-t interval
    of the mean, mean ± t(0.975, n - 1) · std / √n (scipy's t quantile); None below two values."""

    n: int
    mean: float
    std: float | None
    low: float | None
    high: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """Raises ValueError for no values."""
        if not values:
            raise ValueError("a spread needs at least one value")
        mean = math.fsum(values) / len(values)
        if len(values) < 2:
            return cls(len(values), mean, None, None, None)
        std = statistics.stdev(values)
        low, high = t_interval(mean, std / math.sqrt(len(values)), len(values) - 1)
        return cls(len(values), mean, std, low, high)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean, "std": self.std, "low": self.low, "high": self.high}


def t_interval(center: float, standard_error: float, dof: float) -> tuple[float, float]:
    """``center`` ± t(0.975, ``dof``) · ``standard_error``: the two-sided 95% Student-t interval."""
    from scipy import stats

    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, dof)) * standard_error
    return center - half, center + half


@dataclass
class Group:
    """Runs whose settings differ only in the seed (or share the values of ``--group-by`` keys);
    ``settings``: the values of the settings that differ between the groups."""

    settings: dict[str, Any]
    runs: list[RunRecord]
    _kept: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)  # best_metrics per run, read once

    @property
    def complete(self) -> list[RunRecord]:
        """The runs that finished: only they are averaged; the others are shown by status."""
        return [r for r in self.runs if r.complete]

    def values(self, metric: str, which: str = "best") -> dict[int, float]:
        """``{seed: value}`` of ``metric`` over the complete runs: at the checkpoint each run kept
        (``which="best"``, ``best_metrics``) or at its last evaluation (``"last"``)."""
        out = {}
        for record in self.complete:
            if which == "best" and str(record.path) not in self._kept:
                self._kept[str(record.path)] = best_metrics(record)
            value = (self._kept[str(record.path)] if which == "best" else record.metrics).get(metric)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[int(record.config.get(SEED, 0))] = float(value)
        return out


def group_runs(records: Sequence[RunRecord], by: Sequence[str] = ()) -> list[Group]:
    """``records`` in groups, in the order each group's first run appears: runs whose settings are
    equal but for ``seed`` (``name``, ``runs_dir`` and ``track.*`` never count), or with ``by`` runs with equal
    values of those dotted settings. Each group's ``settings`` hold the settings (``by``, or every
    one) whose values differ between groups."""
    flat = [flatten(r.config) for r in records]
    keys: dict[str, None] = {}
    for f in flat:
        keys.update(dict.fromkeys(f))
    compared = list(by) or [k for k in keys if k not in IGNORED_KEYS and k != SEED and not k.startswith(TRACKING)]
    groups: dict[str, Group] = {}
    for record, settings in zip(records, flat, strict=True):
        identity = repr([settings.get(k) for k in compared])
        groups.setdefault(identity, Group({k: settings.get(k) for k in compared}, [])).runs.append(record)
    found = list(groups.values())
    differing = [k for k in compared if any(g.settings[k] != found[0].settings[k] for g in found[1:])]
    for group in found:
        group.settings = {k: group.settings[k] for k in (list(by) or differing)}
    return found


def best_metrics(record: RunRecord) -> dict[str, Any]:
    """Every validation metric of ``record`` at the step it kept as best (``summary.json``'s
    ``best.step``, read from ``metrics.jsonl``); the last evaluation's where that step has no record."""
    from .plot import read_metrics

    step = ((record.summary or {}).get("best") or {}).get("step")
    if step is not None:
        for row in read_metrics(record.path / "metrics.jsonl"):
            if row.get("split") == "val" and row.get("step") == step:
                return {k: v for k, v in row.items() if k not in ("step", "epoch", "split")}
    return record.metrics


@dataclass(frozen=True)
class Verdict:
    """Group ``b`` against group ``a`` on one metric: ``difference`` = mean(b) − mean(a), its 95%
    interval (``low``, ``high``; None with fewer than two runs a group), the ``method`` and what it
    ``says``: "better", "worse" (the metric's direction respected) or not distinguishable."""

    metric: str
    difference: float
    low: float | None
    high: float | None
    method: str
    says: str

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("metric", "difference", "low", "high", "method", "says")}


def verdict(a: Mapping[int, float], b: Mapping[int, float], metric: str, *, higher_is_better: bool = True) -> Verdict:
    """``b`` against ``a`` (``{seed: value}`` each). Paired by seed (a Student-t interval of the
    per-seed differences) where both ran the same two or more seeds; else Welch's t interval
    (unequal variances, Welch–Satterthwaite degrees of freedom) with two or more runs a group.
    The difference is beyond seed noise when its interval excludes 0.

    Raises ValueError where a group has no value."""
    if not a or not b:
        raise ValueError(f"both groups need a value of {metric}")
    difference = math.fsum(b.values()) / len(b) - math.fsum(a.values()) / len(a)
    low = high = None
    if set(a) == set(b) and len(a) >= 2:
        spread = Spread.of([b[s] - a[s] for s in sorted(a)])
        low, high, method = spread.low, spread.high, f"paired t over {len(a)} seeds"
    elif len(a) >= 2 and len(b) >= 2:
        va, vb = statistics.variance(a.values()) / len(a), statistics.variance(b.values()) / len(b)
        dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va + vb > 0 else len(a) + len(b) - 2
        low, high = t_interval(difference, math.sqrt(va + vb), dof)
        method = f"Welch t over {len(a)} and {len(b)} runs"
    else:
        method = "no interval: a group has one run"
    if low is None or high is None or low <= 0 <= high:
        says = f"not distinguishable from seed noise at {len(a)} and {len(b)} runs"
    else:
        says = "better" if (low > 0) == higher_is_better else "worse"
    return Verdict(metric, difference, low, high, method, says)


def group_label(group: Group, index: int, groups: Sequence[Group]) -> str:
    """A group's name in legends and headers: the settings that set it apart (a loss or augmenter
    only some groups chose as ``loss: NAME``, and not the parameters of a component whose name
    differs anyway), else its first run's name."""
    parts: list[str] = []
    for key, value in group.settings.items():
        section, _, rest = key.partition(".")
        elsewhere_absent = any(g.settings.get(key) is None for g in groups)
        if value is None:
            continue
        if section in ("loss", "augment", "balance") and elsewhere_absent:
            named = f"{section}: {rest.partition('.')[0]}"
            parts += [] if named in parts else [named]
        elif not (elsewhere_absent and rest != "name" and f"{section}.name" in group.settings):
            parts.append(f"{key}={format_value(value)}")
    return ", ".join(parts) or (group.runs[0].name if len(group.runs) == 1 else f"group {index + 1}")


def compare_runs(runs: Sequence[str | Path], runs_dir: str | Path = "runs", group_by: Sequence[str] = ()) -> dict[str, Any]:
    """`mmreg runs compare` grouped, as plain data: ``compare_groups`` of ``runs`` (names under
    ``runs_dir`` or directory paths) grouped by ``group_runs``. Raises ConfigError for an unknown run."""
    from .history import load_run

    return compare_groups(group_runs([load_run(r, runs_dir) for r in runs], group_by))


def compare_groups(groups: Sequence[Group]) -> dict[str, Any]:
    """The groups as plain data: ``{"groups": [{"label" (``group_label``), "settings", "runs", "status", "metrics": {metric:
    {"best": Spread dict, "last": Spread dict}}}], "metrics": [names], "headline": {"metric",
    "higher_is_better"} (from the runs' summary.json ``best``, the task's declaration) or None,
    "verdict": Verdict dict between exactly two groups, else None}``. Runs that have not finished
    are listed with their status and averaged nowhere."""
    metrics: dict[str, None] = {}
    for group in groups:
        for record in group.complete:
            metrics.update(dict.fromkeys(record.metrics))
    headline = next(
        ({"metric": b["metric"], "higher_is_better": b.get("higher_is_better", True)}
         for g in groups for r in g.complete if (b := (r.summary or {}).get("best") or {}).get("metric")),
        None,
    )  # fmt: skip
    rows = []
    for group in groups:
        spreads = {}
        for metric in metrics:
            spreads[metric] = {which: Spread.of(list(v.values())).to_dict() if (v := group.values(metric, which)) else None for which in ("best", "last")}
        rows.append({"label": group_label(group, len(rows), groups), "settings": group.settings, "runs": [r.name for r in group.runs], "status": {r.name: r.status for r in group.runs}, "metrics": spreads})
    decided = None
    if len(groups) == 2 and headline is not None:
        a, b = (g.values(headline["metric"]) for g in groups)
        if a and b:
            decided = verdict(a, b, headline["metric"], higher_is_better=headline["higher_is_better"]).to_dict()
    return {"groups": rows, "metrics": list(metrics), "headline": headline, "verdict": decided}
