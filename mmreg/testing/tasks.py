"""The task contract: declarations that hold, parameters that accept their own defaults, targets per
sample, a head that fills what it provides and trains, evaluations that compute the metrics they name
(the headline among them), a JSON-able ``describe()``, and predictions where the task gives them.

The contracts a run also checks on its first batch are ``mmreg.contracts``' own functions, so the
kit and the run never disagree."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import torch

from ..components import Sample, Task
from ..contracts import DESCRIBE_JSON, METRICS_NAMED, TARGETS_ROWS, describe_problem, metrics_problem, targets_problem
from ..errors import ConfigError, InvalidParams
from ..registry import Entry
from .contract import ContractViolation, expect

HEAD_FIELDS = frozenset({"logits", "labels", "token_logits"})  # the Step fields a task's head may give
NO_PREDICTIONS = "gives no predictions"  # what Task.predict's default ConfigError says


def check_task(experiment: Mapping[str, Any], host: Any = None, *, batch: int = 4) -> None:
    """Build the tiny ``experiment`` (a mapping as ``mmreg.run`` takes; its ``task`` the one checked,
    its losses reading what the task provides) without training, and check the task on it.

    Checks: ``text`` and ``needs_fields`` name Sample fields and ``provides`` only head fields; the
    registered parameter schema accepts its own defaults (a required parameter is named when left
    out); ``targets`` gives one row per sample; a task providing outputs builds a head, fills every
    field it provides in the model's step and its head receives a gradient from the losses; each
    evaluation, updated with validation batches, computes exactly the finite metrics it ``names``;
    ``headline`` is None or one of them and ``lower_is_better`` names only them; ``describe()``,
    after the evaluations ran, gives a JSON-able dict; ``predict`` on a few validation images with
    their texts gives a JSON-able list of at most ``top_k`` dicts per image, or the ConfigError
    saying the task gives no predictions.
    Raises ContractViolation naming the broken contract."""
    from ..api import collate_for, prepare, resolve
    from ..config import validate
    from ..plugins import load_plugins
    from ..tasks import task_class

    host = host or load_plugins()
    exp = resolve(validate(experiment), host)
    tasks = host.registry("tasks")
    who = f"task {task_class(tasks, exp.task.name).__name__}"
    _check_params(who, tasks.get(exp.task.name), exp.task.params)  # before building: building validates them again
    prepared = prepare(exp, host)
    task, model = prepared.task, prepared.model
    sample_fields = {f.name for f in dataclasses.fields(Sample)}
    expect(task.text in sample_fields, who, "text names a Sample field", f"text is {task.text!r}")
    expect(set(task.needs_fields) <= sample_fields, who, "needs_fields names Sample fields", f"{sorted(set(task.needs_fields) - sample_fields)}")
    expect(set(task.provides) <= HEAD_FIELDS, who, "provides names head fields", f"{sorted(set(task.provides) - HEAD_FIELDS)} (head fields: {sorted(HEAD_FIELDS)})")

    samples = [prepared.train_split[i] for i in range(min(batch, len(prepared.train_split)))]
    problem = targets_problem(task.targets(samples), len(samples))
    expect(problem is None, who, TARGETS_ROWS, str(problem))
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
    names: list[str] = []
    with torch.no_grad():
        for evaluation in task.evaluations(model):
            for start in range(0, min(len(val), 2 * batch), batch):
                chunk = collate([val[i] for i in range(start, min(start + batch, len(val)))])
                evaluation.update(model, model.encode(chunk), chunk)
            problem = metrics_problem(evaluation, evaluation.compute())
            expect(problem is None, who, METRICS_NAMED, str(problem))
            names.extend(evaluation.names)
        _check_headline(who, task, names, sorted(prepared.exp.loss))
        problem = describe_problem(task.describe())
        expect(problem is None, who, DESCRIBE_JSON, str(problem))
        shown = [val[i] for i in range(min(3, len(val)))]
        _check_predict(who, task, model, shown, top_k=2)


def _check_params(who: str, entry: Entry, given: Mapping[str, Any]) -> None:
    """The schema validates its own defaults (pydantic does not check defaults against their
    constraints unless asked), with the experiment's values for required parameters; left out,
    a required parameter is named in the error."""
    fields = entry.params.model_fields
    required = [name for name, field in fields.items() if field.is_required()]
    defaults = {name: field.get_default(call_default_factory=True) for name, field in fields.items() if not field.is_required()}
    try:
        entry.validate({**defaults, **{name: given[name] for name in required if name in given}})
    except InvalidParams as exc:
        raise ContractViolation(who, "its parameters accept their own defaults", str(exc)) from exc
    if required:
        try:
            entry.validate({})
            raised = "nothing"
        except InvalidParams as exc:
            raised = None if any(f"'{name}'" in str(exc) for name in required) else str(exc)
        expect(raised is None, who, "a required parameter left out is named", f"leaving out {required} raised {raised}")


def _check_headline(who: str, task: Task, names: list[str], losses: list[str]) -> None:
    """The decisive metric is one the evaluations compute; so are those declared better lower."""
    expect(names, who, "its evaluations compute a metric", f"none with losses {losses}")
    expect(task.headline is None or task.headline in names, who, "headline names a metric its evaluations compute",
           f"headline {task.headline!r}, computed {names}")  # fmt: skip
    extra = sorted(set(task.lower_is_better) - set(names))
    expect(not extra, who, "lower_is_better names metrics its evaluations compute", f"{extra} not among {names}")


def _check_predict(who: str, task: Task, model: Any, samples: list[Sample], *, top_k: int) -> None:
    """``predict`` on ``samples``' images with their texts: one JSON-able list of at most ``top_k``
    dicts per image; a task that gives none raises the ConfigError saying so."""
    contract = "predict gives at most top_k JSON-able dicts per image"
    pixels = model.encoder.pixel_inputs([s.image for s in samples])
    texts = [getattr(s, task.text) for s in samples]
    try:
        predictions = task.predict(model, pixels, texts, top_k)
    except Exception as exc:  # only the default's "gives no predictions" is not a broken contract
        if isinstance(exc, ConfigError) and NO_PREDICTIONS in str(exc):
            return
        raise ContractViolation(who, "predict works on validation images and their texts",
                                f"with {len(samples)} images and their {task.text}s it raised {type(exc).__name__}: {exc}") from exc  # fmt: skip
    expect(isinstance(predictions, list) and len(predictions) == len(samples), who, contract,
           f"{len(samples)} images gave {type(predictions).__name__} of {len(predictions) if isinstance(predictions, list) else '?'}")  # fmt: skip
    for i, row in enumerate(predictions):
        ok = isinstance(row, list) and len(row) <= top_k and all(isinstance(p, dict) for p in row)
        expect(ok, who, contract, f"image {i} got {row!r} (top_k {top_k})")
    try:
        json.dumps(predictions, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ContractViolation(who, contract, f"data JSON cannot hold: {exc}") from exc
