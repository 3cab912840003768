"""Balancers in the loop: the gradient hook between the backward pass and the optimizer step
(``mmreg.components.Balancer``), with what it reads gathered over the whole optimizer step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from .components import Balancer, GradientStep, Modality, Step
from .distributed import all_rows, is_distributed
from .errors import ContractBroken
from .optim import named_by_group

if TYPE_CHECKING:
    from .model import MultimodalModel

MODALITY_GROUPS = {"image": ("vision", ("image_proj.", "itc_image_proj.")), "text": ("text", ("text_proj.", "itc_text_proj."))}
PREFIX = "balance/"  # a balancer's numbers are logged as balance/NAME/KEY
SHAPE_AND_DTYPE = "leaves each gradient its weight's shape and dtype"  # the contracts a run checks, in the kit's words too
NUMBERS = "returns a mapping of numbers to log"


def modality_parameters(
    model: MultimodalModel, groups: Mapping[str, list[tuple[str, torch.nn.Parameter]]] | None = None
) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
    """The trainable weights serving one modality alone: {"image": the vision tower and the image
    projections, "text": the text tower and the text projections} (empty where frozen), from
    ``groups`` (``mmreg.optim.named_by_group`` of the model, computed where not given)."""
    groups = groups if groups is not None else named_by_group(model)
    out = {}
    for modality, (tower, projections) in MODALITY_GROUPS.items():
        out[modality] = list(groups[tower]) + [(n, p) for n, p in groups["fusion"] if n.startswith(projections)]
    return out  # type: ignore[return-value]


def step_outputs(kept: Sequence[Step]) -> Step:
    """One ``Step`` of the optimizer step from each micro-batch's (``mmreg.model.detached``): rows
    concatenated in order and, under data parallelism, every process's gathered in rank order."""

    def cat(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
        if any(t is None for t in tensors):
            return None
        whole = torch.cat(tensors)  # type: ignore[arg-type]
        return all_rows(whole) if is_distributed() else whole

    unimodal = None
    if all(s.unimodal is not None for s in kept):
        unimodal = {k: cat([s.unimodal[k] for s in kept]) for k in kept[0].unimodal}  # type: ignore[index]
    return Step(
        Modality(pooled=cat([s.image.pooled for s in kept])),
        Modality(pooled=cat([s.text.pooled for s in kept])),
        logits=cat([s.logits for s in kept]),
        labels=cat([s.labels for s in kept]),
        unimodal=unimodal,  # type: ignore[arg-type]
    )


def gradient_norms(model: MultimodalModel, scale: float = 1.0) -> dict[str, float]:
    """``grad_norm/PART``: the L2 norm of the gradients of each part holding trainable weights now
    (``mmreg.optim.named_by_group``: the vision and text towers, the fusion with the projections, the
    head), divided by ``scale`` (fp16's loss scale); one host sync. Called after any reduction across
    processes and before clipping, a part dominating the others is what modality imbalance looks
    like in the gradients."""
    norms = {}
    for name, named in named_by_group(model).items():
        grads = [p.grad.detach().float().norm() for _, p in named if p.grad is not None]
        if named:
            norms[name] = torch.stack(grads).norm() if grads else torch.zeros((), device=named[0][1].device)
    values = (torch.stack(list(norms.values())) / scale).tolist() if norms else []
    return {f"grad_norm/{name}": value for name, value in zip(norms, values, strict=True)}


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """A generator seeded by the run's seed and the step: the same on every process and on resume."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + step)
    return generator


def gradient_changed(name: str, shape: torch.Size, dtype: torch.dtype, grad: torch.Tensor | None) -> str | None:
    """How a balancer left the gradient of weight ``name``, once ``shape`` and ``dtype``, where that breaks
    ``SHAPE_AND_DTYPE``; None where it kept them."""
    if grad is not None and grad.shape == shape and grad.dtype == dtype:
        return None
    seen = "removed" if grad is None else f"{tuple(grad.shape)} {grad.dtype}"
    return f"the gradient of {name} was {tuple(shape)} {dtype} and is now {seen}"


def refused_gradient(exc: BaseException) -> bool:
    """Whether ``exc`` is torch refusing a ``.grad`` of another shape or dtype as it is assigned."""
    return isinstance(exc, RuntimeError) and "assign a gradient" in str(exc)


def not_a_number(key: object, value: object) -> str | None:
    """What is wrong with one entry a balancer returned (``NUMBERS``: a string key, a float, int or
    one-element tensor); None where it is a number."""
    if isinstance(key, str) and (isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1)):
        return None
    shape = f" of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else ""
    return f"{key!r} is {type(value).__name__}{shape}"


class Balancing:
    """The experiment's balancers in order (``[balance.NAME]``), applied to one optimizer step.

    It has the model keep each training pass's outputs (``MultimodalModel.kept``, with each modality's
    own logits where a balancer reads them) until the step they belong to is applied or discarded,
    and holds the numbers of the last step applied for the log."""

    def __init__(self, balancers: Mapping[str, Balancer], model: MultimodalModel, seed: int) -> None:
        self.balancers, self.model, self.seed = dict(balancers), model, seed
        self.numbers: dict[str, float | torch.Tensor] = {}
        model.kept, model.wants_unimodal = [], any(b.needs_unimodal for b in self.balancers.values())

    def discard(self) -> None:
        """Forget the passes kept so far and the last numbers (a skipped step, or passes before training)."""
        self.model.kept = []
        self.numbers = {}

    def logged(self) -> dict[str, float]:
        """The last applied step's numbers as floats, ``balance/NAME/KEY`` (one host sync)."""
        return as_floats(self.numbers)

    def apply(self, step: int, epoch: int, steps_per_epoch: int, device: torch.device) -> None:
        """Run each balancer on the step's gradients and the outputs of its passes, then forget those.
        Raises ContractBroken naming a balancer that left a gradient of another shape or dtype, or returned
        something other than numbers."""
        groups = named_by_group(self.model)  # each step: a PEFT strategy may unfreeze weights during the run (progressive)
        gradient_step = GradientStep(
            outputs=step_outputs(self.model.kept or []),
            modalities=modality_parameters(self.model, groups),
            groups=groups,
            step=step,
            epoch=epoch,
            steps_per_epoch=steps_per_epoch,
            generator=step_generator(self.seed, step, device),
        )
        self.discard()
        shapes = [(n, p, p.grad.shape, p.grad.dtype) for group in groups.values() for n, p in group if p.grad is not None]
        for name, balancer in self.balancers.items():
            who = f"balancer '{name}'"
            try:
                returned = balancer(gradient_step)
            except RuntimeError as exc:
                if not refused_gradient(exc):
                    raise
                raise ContractBroken(who, SHAPE_AND_DTYPE, f"it raised {type(exc).__name__}: {exc}") from exc
            for weight_name, p, shape, dtype in shapes:
                changed = gradient_changed(weight_name, shape, dtype, p.grad)
                if changed is not None:
                    raise ContractBroken(who, SHAPE_AND_DTYPE, changed)
            if not isinstance(returned, Mapping):
                raise ContractBroken(who, NUMBERS, f"it returned {type(returned).__name__}")
            for key, value in returned.items():
                wrong = not_a_number(key, value)
                if wrong is not None:
                    raise ContractBroken(who, NUMBERS, wrong)
                self.numbers[f"{PREFIX}{name}/{key}"] = value


def as_floats(numbers: Mapping[str, float | torch.Tensor]) -> dict[str, float]:
    """Numbers a balancer returned, as floats (one host sync for the tensors among them)."""
    tensors = {k: v for k, v in numbers.items() if isinstance(v, torch.Tensor)}
    values = torch.stack([v.detach().float().reshape(()) for v in tensors.values()]).tolist() if tensors else []
    return {**{k: float(v) for k, v in numbers.items() if not isinstance(v, torch.Tensor)}, **dict(zip(tensors, values, strict=True))}
