"""The balancer contract: on a real step of a tiny model, each gradient keeps its weight's shape and
dtype and stays finite, the weights themselves are left alone, the numbers returned are finite, the
same ``GradientStep.generator`` gives the same gradients, and ``needs_unimodal`` is declared exactly
where ``outputs.unimodal`` is read.

A run checks the shape, dtype and mapping contracts itself (``mmreg.balance.Balancing.apply``), in
the same words."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch

from ..balance import NUMBERS, SHAPE_AND_DTYPE, gradient_changed, not_a_number, refused_gradient
from ..components import Balancer, GradientStep, Step
from ..errors import ConfigError
from .contract import ContractViolation, expect, scramble_global_rngs

STEPS_PER_EPOCH = 4


def check_balancer(balancer: Balancer, experiment: Mapping[str, Any], host: Any = None, *, epoch: int = 0, seed: int = 0) -> None:
    """Train one batch of the tiny ``experiment`` (a mapping as ``mmreg.run`` takes; for a balancer
    declaring ``needs_unimodal`` one whose fusion gives ``outputs.unimodal`` {"image": [N, C], "text":
    [N, C]}: a classifier over a fusion declaring ``Fusion.gives_unimodal``), then call ``balancer`` on
    that step's gradients as a run does at epoch ``epoch``
    (``GradientStep.generator`` from ``mmreg.balance.step_generator(seed, step)``).

    Checks: it runs on the step; each gradient it leaves has its weight's shape and dtype and only
    finite values; no weight's value changes (a balancer changes gradients; the optimizer changes
    weights); it returns a mapping of string keys to finite numbers (floats, ints or one-element
    tensors); called again on the same gradients with the same generator seed, the global random
    generators (Python's, NumPy's, torch's) reseeded between the calls, it gives the same gradients
    and numbers; a balancer reading ``outputs.unimodal`` declares ``needs_unimodal`` (without it the
    field is None, as in a run), and one declaring it reads it: other logits of the same shape change
    its gradients or its numbers. A balancer may change any weight's gradient, not only those of
    ``step.modalities``.

    Raises ContractViolation naming the broken contract, and ConfigError where the experiment cannot
    give a balancer declaring ``needs_unimodal`` its unimodal logits."""
    from ..api import collate_for, prepare
    from ..balance import modality_parameters, step_generator, step_outputs
    from ..optim import named_by_group

    who = f"balancer {type(balancer).__name__}"
    prepared = prepare(experiment, host)
    model = prepared.model
    if balancer.needs_unimodal and not model.gives_unimodal:
        raise ConfigError(f"{who} declares needs_unimodal; check it with an experiment whose fusion gives unimodal logits (Fusion.gives_unimodal) and whose task's head reads the fusion")
    model.train()
    model.kept, model.wants_unimodal = [], model.gives_unimodal  # filled always, to tell an undeclared read from other failures
    batch = collate_for(prepared)([prepared.train_split[i] for i in range(min(prepared.exp.train.batch_size, len(prepared.train_split)))])
    loss, _ = model(batch)
    loss.backward()
    full = step_outputs(model.kept)
    groups = named_by_group(model)
    modalities = modality_parameters(model, groups)
    weights = [(name, p) for group in groups.values() for name, p in group]
    grads = {name: p.grad.detach().clone() for name, p in weights if p.grad is not None}
    values = {name: p.detach().clone() for name, p in weights}
    device, step = next(model.parameters()).device, epoch * STEPS_PER_EPOCH

    def call(outputs: Step, scramble: int) -> tuple[Any, dict[str, torch.Tensor | None]]:
        """The balancer on fresh copies of the step's gradients; what it returned and the gradients it left."""
        for name, p in weights:
            p.grad = grads[name].clone() if name in grads else None
        scramble_global_rngs(scramble)
        generator = step_generator(seed, step, device)
        returned = balancer(GradientStep(outputs, modalities, groups, step, epoch, STEPS_PER_EPOCH, generator))
        return returned, {name: None if p.grad is None else p.grad.detach().clone() for name, p in weights}

    outputs = full if balancer.needs_unimodal else dataclasses.replace(full, unimodal=None)
    try:
        returned, left = call(outputs, 1)
    except Exception as exc:  # any failure on a real step is a broken contract; say which where it can be told
        raised = f"{type(exc).__name__}: {exc}"
        if refused_gradient(exc):
            raise ContractViolation(who, SHAPE_AND_DTYPE, f"it raised {raised}") from exc
        if outputs.unimodal is None and full.unimodal is not None and _runs(call, full):
            raise ContractViolation(who, "declares needs_unimodal to read outputs.unimodal",
                                    f"without needs_unimodal outputs.unimodal is None and it raised {raised}; with it filled it runs") from exc  # fmt: skip
        raise ContractViolation(who, "runs on a step of a real model", f"it raised {raised}") from exc

    for name, p in weights:
        expect(torch.equal(p.detach(), values[name]), who, "changes gradients, never the weights", f"the value of {name} changed")
    for name, before in grads.items():
        after = left[name]
        changed = gradient_changed(name, before.shape, before.dtype, after)
        expect(changed is None, who, SHAPE_AND_DTYPE, str(changed))
        bad = int((~torch.isfinite(after)).sum())  # type: ignore[arg-type]
        expect(bad == 0, who, "keeps every gradient finite", f"the gradient of {name} has {bad} non-finite values")
    numbers = _numbers(who, returned)

    again, left_again = call(outputs, 1000)
    changed = [name for name in grads if not torch.equal(left[name], left_again[name])]  # type: ignore[arg-type]
    expect(not changed and _numbers(who, again) == numbers, who, "deterministic for a given step.generator",
           f"{'the gradients of ' + ', '.join(changed[:3]) if changed else 'its numbers'} came out differently from the same generator "
           "(global random state changed between calls: draw noise from step.generator)")  # fmt: skip

    if balancer.needs_unimodal:
        assert full.unimodal is not None  # model.gives_unimodal, checked above
        g = torch.Generator().manual_seed(seed + 1)
        other = {k: 3 * torch.randn(v.shape, generator=g).to(v) for k, v in full.unimodal.items()}
        returned_other, left_other = call(dataclasses.replace(full, unimodal=other), 1)
        same = all(torch.equal(left[name], left_other[name]) for name in grads) and _numbers(who, returned_other) == numbers  # type: ignore[arg-type]
        expect(not same, who, "declares needs_unimodal only where it reads outputs.unimodal",
               "other logits in outputs.unimodal changed neither its gradients nor its numbers")  # fmt: skip


def _runs(call: Any, outputs: Step) -> bool:
    """Whether the balancer runs on ``outputs`` without raising."""
    try:
        call(outputs, 1)
    except Exception:  # only whether it runs matters here
        return False
    return True


def _numbers(who: str, returned: Any) -> dict[str, float]:
    """What a balancer returned, as floats by key; ContractViolation unless a mapping of string keys to finite numbers."""
    expect(isinstance(returned, Mapping), who, NUMBERS, f"it returned {type(returned).__name__}")
    out = {}
    for key, value in returned.items():
        wrong = not_a_number(key, value)
        expect(wrong is None, who, NUMBERS, str(wrong))
        out[key] = float(value.detach().float().reshape(())) if isinstance(value, torch.Tensor) else float(value)
        expect(math.isfinite(out[key]), who, "returns finite numbers", f"{key!r} is {out[key]}")
    return out
