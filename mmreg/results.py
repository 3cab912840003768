"""The one metric that decides a run: which checkpoint is best, when to stop early, what a search
optimises and prunes on, and what `mmreg runs list` shows, with whether higher or lower is better.

The task declares it (``Task.headline``, ``Task.lower_is_better``); the user may name
another (``train.metric``, ``mmreg search --metric``), checked against the metrics the task's
evaluations will compute before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, did_you_mean

EMA = "ema/"  # the prefix of the metrics of the weights' moving average (train.ema)


def plain(name: str) -> str:
    """A metric's name without the ``ema/`` prefix: its direction is the plain metric's."""
    return name.removeprefix(EMA)


@dataclass(frozen=True)
class Metric:
    """A validation metric by name, and its direction."""

    name: str
    higher_is_better: bool = True

    @property
    def direction(self) -> str:
        """Optuna's word for it: "maximize" or "minimize"."""
        return "maximize" if self.higher_is_better else "minimize"

    def better(self, value: float, best: float | None) -> bool:
        """Whether ``value`` improves on ``best`` (None: nothing yet); ties do not improve."""
        if best is None:
            return True
        return value > best if self.higher_is_better else value < best

    def record(self) -> dict[str, Any]:
        """As summary.json's ``best`` and search records hold it."""
        return {"metric": self.name, "higher_is_better": self.higher_is_better}


def check_requested(task: Any, name: str, requested: str | None, where: str, *, ema: bool = False, sets: Sequence[str] = ()) -> None:
    """Refuse a ``requested`` metric (``where``: the setting that named it) that the task class
    declares it never computes (``Task.metric_names``), before anything is built; with ``ema``
    (``train.ema`` set) ``ema/NAME`` names the moving average's. A metric of an evaluation set
    (``SET/NAME``, ``sets``: their names) is checked once the sets are built (``resolve_metric``).
    Raises ConfigError."""
    declared = getattr(task, "metric_names", None)
    if requested is not None and requested.startswith(EMA) and not ema:
        raise ConfigError(f"{where} '{requested}' is the weights' moving average's, but train.ema is unset; set train.ema (e.g. 0.999)")
    if requested is not None and plain(requested).partition("/")[0] in sets:
        return
    if requested is None or declared is None or (plain(requested) if ema else requested) in declared:
        return
    raise ConfigError(
        f"{where} '{requested}' is never computed by task '{name}'{did_you_mean(requested, declared)} "
        f"(it computes: {', '.join(declared)}); name one of them"
    )


def resolve_metric(
    task: Any, evaluations: Sequence[Any], requested: str | None = None, *, ema: bool = False, sets: Mapping[str, bool] | None = None
) -> Metric:
    """The metric that decides: ``requested`` (``train.metric``), else the task's ``headline``,
    else the first metric of the first evaluation; its direction from ``task.lower_is_better``.
    ``sets``: the evaluation sets' metrics (``SET/NAME``, whether each is better lower), which may be
    requested too; with ``ema`` every metric also as the moving average's, ``ema/NAME``.

    Raises ConfigError for a requested metric the evaluations do not compute (naming those they
    do), and for a run that computes none (a task whose evaluations need a loss that is absent).
    """
    computed = [name for evaluation in evaluations for name in evaluation.names]
    who = f"task '{getattr(task, 'name', type(task).__name__)}'"
    if not computed:
        raise ConfigError(f"{who} computes no validation metric with these losses; add a loss its evaluation reads (mmreg show tasks {getattr(task, 'name', '')})")
    lower = set(getattr(task, "lower_is_better", frozenset()))
    computed += list(sets or {})  # evaluation sets' SET/NAME, each with whether it is better lower
    lower |= {name for name, is_lower in (sets or {}).items() if is_lower}
    computed += [EMA + name for name in computed] if ema else []  # with train.ema: the moving average's too
    if requested is not None:
        if requested not in computed:
            raise ConfigError(
                f"validation metric '{requested}' is not computed by {who}{did_you_mean(requested, computed)} "
                f"(it computes: {', '.join(computed)}); set train.metric or --metric to one of them"
            )
        name = requested
    else:
        name = getattr(task, "headline", None) or computed[0]
        if name not in computed:
            raise ConfigError(f"{who} declares headline metric '{name}' but its evaluations compute {', '.join(computed)}; fix the task's headline")
    return Metric(name, plain(name) not in lower)


__all__ = ["EMA", "Metric", "check_requested", "plain", "resolve_metric"]
