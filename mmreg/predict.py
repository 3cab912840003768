"""Predictions from a trained run: the API behind `mmreg predict` (and its short form `mmreg caption`)
and `mmreg eval --results`. Each is the task plugin's own ``Task.predict`` or ``Task.results``; the
core names no task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .plugins import PluginHost

if TYPE_CHECKING:
    from .api import Prepared


def predict_images(
    run: str | Path,
    images: Sequence[str | Path],
    *,
    texts: Sequence[str] = (),
    top_k: int = 5,
    target: str | None = None,
    task_params: Mapping[str, Any] = {},
    checkpoint: str = "best",
    device: str = "auto",
    runs_dir: str | Path = "runs",
    host: PluginHost | None = None,
) -> list[dict[str, Any]]:
    """``[{"image": path, "predictions": [{..., "score": float}, ...]}]``, one per image, in order,
    each list best first (at most ``top_k``). ``texts``: what the task reads with the images, a
    question or caption (one for all, or one per image) or the candidate captions it ranks.

    ``target``: the sample field the predictions must be of (``Task.target``; `mmreg caption`
    asks for "caption"); a run whose task predicts another is refused. ``task_params``: parameters
    of the run's task that change how it predicts (generation settings), over the run's own; they
    are checked against the schema the task registered and set on the task built as the run
    trained it (a task keeps each parameter as the attribute of its name), so the weights still fit.

    Raises ConfigError for ``top_k`` < 1, a bad checkpoint, a task predicting another ``target``,
    a parameter the task keeps no attribute of, or texts that do not fit the task; InvalidParams
    (exit 2 as well) for a parameter the task lacks or a value its schema refuses; DataError for
    an image that cannot be read.
    """
    import torch

    from .history import load_run, rebuild_run, weights_for
    from .images import read_image_files
    from .train import pick_device

    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    run_path = load_run(run, runs_dir).path
    weights, _ = weights_for(run_path, checkpoint)
    loaded = read_image_files(images)
    p = rebuild_run(run_path, weights, host)
    if target is not None and p.task.target != target:
        raise ConfigError(
            f"run {run_path.name} trained task '{p.task.name}', which predicts {p.task.target or 'no sample field'}, "
            f"not {target}; give a run whose task predicts {target}"
        )
    _set_task_params(p, task_params, host)
    model = p.model.to(pick_device(device)).eval()
    with torch.inference_mode():
        results = p.task.predict(model, model.encoder.pixel_inputs(loaded), list(texts), top_k)
    return [{"image": str(path), "predictions": preds} for path, preds in zip(images, results, strict=True)]


def _set_task_params(p: Prepared, task_params: Mapping[str, Any], host: PluginHost | None) -> None:
    """Set ``task_params`` on the built task ``p.task`` after checking them, with the run's other
    parameters (``p.exp.task.params``), against the schema its plugin registered.

    Raises InvalidParams naming a parameter the task lacks or a value the schema refuses, and
    ConfigError for a parameter the task keeps no attribute of.
    """
    if not task_params:
        return
    from .plugins import load_plugins

    entry = (host or load_plugins()).registry("tasks").get(p.task.name)
    checked = entry.validate({**p.exp.task.params, **task_params})
    for key in task_params:
        if not hasattr(p.task, key):
            raise ConfigError(f"task '{p.task.name}' keeps no attribute '{key}', so its parameter cannot change after the build; retrain with task.{key}")
        setattr(p.task, key, getattr(checked, key))


def task_results(
    run: str | Path,
    split: str = "val",
    *,
    checkpoint: str = "best",
    device: str = "auto",
    runs_dir: str | Path = "runs",
    host: PluginHost | None = None,
) -> Any:
    """The run's predictions for every sample of ``split`` in its task's own results format
    (``Task.results``; JSON-able, written by `mmreg eval --results`), from the weights of
    ``checkpoint`` on ``device``.

    Raises ConfigError for an unknown split or checkpoint, and (the ``Task`` default) for a task
    without a results format, naming it.
    """
    import torch

    from .history import check_eval, rebuild_run
    from .train import pick_device

    run_path, weights, _ = check_eval(run, split, checkpoint, runs_dir)
    p = rebuild_run(run_path, weights, host)
    samples = p.val_split if split == "val" else p.train_split
    model = p.model.to(pick_device(device)).eval()
    with torch.inference_mode():
        return p.task.results(model, samples)


__all__ = ["predict_images", "task_results"]
