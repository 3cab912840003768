"""Contracts every component keeps, checked on a run's first batch before its run directory
exists (``preflight``) and by the conformance kit (``mmreg.testing``) on a plugin's own tests.

Each ``*_problem`` function returns what was seen where the contract is broken, else None.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .errors import ContractBroken

if TYPE_CHECKING:
    from .api import Prepared
    from .components import Evaluation, Sample
    from .plugins import PluginHost

LOSS_SCALAR = "a loss gives a scalar"
TARGETS_ROWS = "targets give one row per sample"
METRICS_NAMED = "an evaluation computes the metrics it names, as finite numbers"
DESCRIBE_JSON = "describe() returns JSON-able data"


def loss_problem(value: Any, *, finite: bool = True) -> str | None:
    """A loss's output must be a 0-d (or one-element) tensor, and finite where ``finite`` (the kit;
    a run leaves a non-finite loss to its divergence guard, ``train.max_bad_steps``)."""
    if not isinstance(value, torch.Tensor):
        return f"returned {type(value).__name__}, not a tensor"
    if value.numel() != 1:
        return f"returned a tensor of shape {tuple(value.shape)} ({value.numel()} elements); reduce it to one number, e.g. .mean()"
    if finite and not torch.isfinite(value.detach()).all():
        return f"returned {value.item()}"
    return None


def targets_problem(targets: Mapping[str, Any], rows: int) -> str | None:
    """Every tensor ``Task.targets`` gives must have one row per sample of the batch."""
    bad = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for k, v in targets.items()
           if not isinstance(v, torch.Tensor) or v.dim() == 0 or v.shape[0] != rows}  # fmt: skip
    return f"{bad} for {rows} samples" if bad else None


def metrics_problem(evaluation: Evaluation, metrics: Mapping[str, Any]) -> str | None:
    """``compute()`` gives every metric of ``names`` and no other, except breakdowns of a named one
    (``NAME/GROUP``: VQA's accuracy per answer type), each a finite number."""
    name = type(evaluation).__name__
    named = set(evaluation.names)
    unnamed = {k for k in metrics if k not in named and k.split("/", 1)[0] not in named}
    if not named <= set(metrics) or unnamed:
        return f"{name} names {sorted(named)}, computed {sorted(metrics)}"
    odd = {k: v for k, v in metrics.items() if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)}
    return f"{name} gave {odd}" if odd else None


def describe_problem(described: Any) -> str | None:
    """``Task.describe()`` gives a dict that ``json.dumps`` writes as it is."""
    if not isinstance(described, dict):
        return f"returned {type(described).__name__}, not a dict"
    try:
        json.dumps(described, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"returned data JSON cannot hold: {exc}"
    return None


def first_samples(split: Any, count: int, augmenters: Sequence[Any] = (), seed: int = 0) -> list[Sample]:
    """The first ``count`` usable samples of a split as the loaders give them (augmented by
    ``augmenters`` as in a run's first epoch): read from the start of a stream where it is one, and
    past samples that fail to decode (``UnreadableSample``: the loaders skip and count them)."""
    from .badimages import UnreadableSample
    from .components import Sample
    from .data import AugmentedSplit
    from .streams import head, is_stream

    if is_stream(split):
        items = head(AugmentedSplit(split, augmenters, seed) if augmenters else split, count)
        return [item for item in items if isinstance(item, Sample)]
    samples: list[Sample] = []
    augmented = AugmentedSplit(split, augmenters, seed)
    for index in range(len(split)):
        if len(samples) == count:
            break
        try:
            samples.append(augmented[index])
        except UnreadableSample:
            continue
    return samples


def preflight(p: Prepared, host: PluginHost, collate: Any, device: torch.device) -> None:
    """Pass the first training batch through the model and every loss, and the first validation
    batch through every evaluation and ``describe()``, checking the contracts above.

    Runs in eval mode under ``torch.no_grad`` on copies of the losses, with the RNG states restored
    afterwards, so the run that follows is the one it would have been. Raises ContractBroken (exit 2) naming the component
    and the plugin that registered it.
    """
    import random

    import numpy as np

    from .train import to_device

    model, task = p.model, p.task

    def who(kind: str, name: str) -> str:
        return f"{host.registry(kind).get(name).kind.label} '{name}' (plugin '{host.registry(kind).get(name).plugin}')"

    def check(problem: str | None, component: str, contract: str) -> None:
        if problem is not None:
            raise ContractBroken(component, contract, problem)

    task_who = who("tasks", task.name)
    states = random.getstate(), np.random.get_state()
    train = first_samples(p.train_split, p.exp.train.batch_size, p.augmenters, p.exp.seed)  # the views a loss may read
    val = first_samples(p.val_split, min(p.exp.train.eval_batch_size, 8))
    check(targets_problem(task.targets(train), len(train)), task_who, TARGETS_ROWS)
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        try:
            step = model.step(to_device(collate(train), device))
            for name, loss in model.losses.items():  # a copy: a loss with state (a call count) starts the run untouched
                check(loss_problem(copy.deepcopy(loss)(step), finite=False), who("losses", name), LOSS_SCALAR)
            batch = to_device(collate(val), device)
            features = model.encode(batch)
            for evaluation in task.evaluations(model):
                evaluation.update(model, features, batch)
                check(metrics_problem(evaluation, evaluation.compute()), task_who, METRICS_NAMED)
            check(describe_problem(task.describe()), task_who, DESCRIBE_JSON)
        finally:
            model.train(was_training)
            random.setstate(states[0])
            np.random.set_state(states[1])


__all__ = ["describe_problem", "first_samples", "loss_problem", "metrics_problem", "preflight", "targets_problem"]
