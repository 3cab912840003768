"""The task contract: declarations that hold, targets per sample, a head that fills what it provides and trains,
and evaluations that compute the metrics they name."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch

from ..components import Sample
from .contract import expect

HEAD_FIELDS = frozenset({"logits", "labels", "token_logits"})  # the Step fields a task's head may give


def check_task(experiment: Mapping[str, Any], host: Any = None, *, batch: int = 4) -> None:
    """Build the tiny ``experiment`` (a mapping as ``mmreg.run`` takes; its ``task`` the one checked,
    its losses reading what the task provides) without training, and check the task on it.

    Checks: ``text`` and ``needs_fields`` name Sample fields and ``provides`` only head fields;
    ``targets`` gives one row per sample; a task providing outputs builds a head, fills every
    field it provides in the model's step and its head receives a gradient from the losses; each
    evaluation, updated with validation batches, computes exactly the finite metrics it ``names``.
    Raises ContractViolation naming the broken contract."""
    from ..api import collate_for, prepare

    prepared = prepare(experiment, host)
    task, model = prepared.task, prepared.model
    who = f"task {type(task).__name__}"
    sample_fields = {f.name for f in dataclasses.fields(Sample)}
    expect(task.text in sample_fields, who, "text names a Sample field", f"text is {task.text!r}")
    expect(set(task.needs_fields) <= sample_fields, who, "needs_fields names Sample fields", f"{sorted(set(task.needs_fields) - sample_fields)}")
    expect(set(task.provides) <= HEAD_FIELDS, who, "provides names head fields", f"{sorted(set(task.provides) - HEAD_FIELDS)} (head fields: {sorted(HEAD_FIELDS)})")

    samples = [prepared.train_split[i] for i in range(min(batch, len(prepared.train_split)))]
    targets = task.targets(samples)
    bad = {k: tuple(v.shape) for k, v in targets.items() if not isinstance(v, torch.Tensor) or v.shape[0] != len(samples)}
    expect(not bad, who, "targets give one row per sample", f"{bad} for {len(samples)} samples")
    collate = collate_for(prepared)
    if task.provides - {"labels"}:
        expect(model.head is not None, who, "a task providing outputs builds a head", "build_head returned None")
        model.train()
        step = model.step(collate(samples))
        empty = sorted(f for f in task.provides if getattr(step, f) is None)
        expect(not empty, who, "forward fills every field in provides", f"{empty} left empty")
        total = sum(prepared.exp.loss[name].weight * loss(step) for name, loss in model.losses.items())
        total.backward()  # type: ignore[union-attr]
        silent = sorted(n for n, p in model.head.named_parameters() if p.requires_grad and p.grad is None)
        expect(not silent, who, "the head receives a gradient", f"no gradient reached head weights {silent[:4]}")

    model.eval()
    val = prepared.val_split
    with torch.no_grad():
        for evaluation in task.evaluations(model):
            for start in range(0, min(len(val), 2 * batch), batch):
                chunk = collate([val[i] for i in range(start, min(start + batch, len(val)))])
                evaluation.update(model, model.encode(chunk), chunk)
            metrics = evaluation.compute()
            name = type(evaluation).__name__
            expect(set(metrics) == set(evaluation.names), who, "an evaluation computes the metrics it names",
                   f"{name} names {sorted(evaluation.names)}, computed {sorted(metrics)}")  # fmt: skip
            odd = {k: v for k, v in metrics.items() if not (isinstance(v, (int, float)) and math.isfinite(v))}
            expect(not odd, who, "metrics are finite numbers", f"{name} gave {odd}")
