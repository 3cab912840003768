"""Extra evaluation sets (``[eval_sets.NAME]``): the run's model scored, at every evaluation, on
other data or by another head-less task (a shifted copy of the data, a zero-shot task), each
set's metrics named ``NAME/METRIC`` beside the validation split's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, MmregError

if TYPE_CHECKING:
    from .api import Prepared
    from .components import Sample, Task
    from .config import Experiment
    from .plugins import PluginHost

RESERVED = ("ema",)  # ema/METRIC: the moving average's (train.ema)


def set_experiments(exp: Experiment, host: PluginHost) -> dict[str, Experiment]:
    """Each set's experiment (``mmreg.history.evaluation_experiment``: the run's, with the set's
    dataset, task and ``set`` swapped in), resolved and checked before anything is built.

    Raises ConfigError for a name with "/" or a reserved one, and what evaluating such a swap would
    raise (an unknown name, a bad parameter, fields the task lacks), prefixed with the set's table."""
    from .history import evaluation_experiment

    out = {}
    for name, chosen in exp.eval_sets.items():
        if not name or "/" in name or name in RESERVED:
            raise ConfigError(f"eval_sets.{name}: a set's name becomes its metrics' prefix; use one without '/' other than {', '.join(RESERVED)}")
        try:
            out[name] = evaluation_experiment(exp, host, task=chosen.task, dataset=chosen.dataset, overrides=chosen.set)
        except MmregError as exc:
            exc.args = (f"eval_sets.{name}: {exc}", *exc.args[1:])
            raise
    return out


def set_parts(p: Prepared, experiments: dict[str, Experiment], host: PluginHost) -> list[tuple[str, Task, Sequence[Sample]]]:
    """``(name, task, validation samples)`` of each set beside the prepared run ``p``
    (``mmreg.history.evaluation_parts``); errors prefixed with the set's table."""
    from .history import evaluation_parts

    parts = []
    for name, exp in experiments.items():
        try:
            task, samples = evaluation_parts(p, exp, "val", host)
        except MmregError as exc:
            exc.args = (f"eval_sets.{name}: {exc}", *exc.args[1:])
            raise
        parts.append((name, task, samples))
    return parts


def score_sets(model: Any, sets: Sequence[tuple[str, Task, Any]], device: Any) -> dict[str, float]:
    """Each set's metrics of ``model`` (``(name, task, loader)``), as ``NAME/METRIC``: the model's
    task is swapped for the set's during its pass (``mmreg.train.evaluate`` reads it) and restored."""
    from .train import evaluate

    metrics: dict[str, float] = {}
    own = model.task
    for name, task, loader in sets:
        model.task = task
        try:
            metrics.update({f"{name}/{k}": v for k, v in evaluate(model, loader, device).items()})
        finally:
            model.task = own
    return metrics


def set_metrics(parts: Sequence[tuple[str, Task, Any]], model: Any) -> dict[str, bool]:
    """``{NAME/METRIC: better lower}`` for every metric each set's task computes."""
    return {
        f"{name}/{metric}": metric in task.lower_is_better
        for name, task, _ in parts for evaluation in task.evaluations(model) for metric in evaluation.names
    }  # fmt: skip
