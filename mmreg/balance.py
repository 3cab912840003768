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


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """A generator seeded by the run's seed and the step: the same on every process and on resume."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + step)
    return generator


class Balancing:
    """The experiment's balancers in order (``[balance.NAME]``), applied to one optimizer step."""

    def __init__(self, balancers: Mapping[str, Balancer], model: MultimodalModel, seed: int) -> None:
        self.balancers, self.model, self.seed = dict(balancers), model, seed

    @property
    def needs_unimodal(self) -> bool:
        return any(b.needs_unimodal for b in self.balancers.values())

    def apply(self, kept: Sequence[Step], step: int, epoch: int, steps_per_epoch: int, device: torch.device) -> dict[str, float | torch.Tensor]:
        """Run each balancer on the step's gradients; their numbers as ``balance/NAME/KEY``. Raises
        ContractBroken naming a balancer that left a gradient of another shape or dtype, or returned
        something other than numbers."""
        groups = named_by_group(self.model)  # each step: a PEFT strategy may unfreeze weights during the run (progressive)
        gradient_step = GradientStep(
            outputs=step_outputs(kept),
            modalities=modality_parameters(self.model, groups),
            groups=groups,
            step=step,
            epoch=epoch,
            steps_per_epoch=steps_per_epoch,
            generator=step_generator(self.seed, step, device),
        )
        numbers: dict[str, float | torch.Tensor] = {}
        for name, balancer in self.balancers.items():
            shapes = [(n, p, p.grad.shape, p.grad.dtype) for group in groups.values() for n, p in group if p.grad is not None]
            try:
                returned = balancer(gradient_step)
            except RuntimeError as exc:
                if "assign a gradient" not in str(exc):  # torch refuses a .grad of another shape or dtype as it is set
                    raise
                raise ContractBroken(f"balancer '{name}'", SHAPE_AND_DTYPE, f"it raised {type(exc).__name__}: {exc}") from exc
            for weight_name, p, shape, dtype in shapes:
                grad = p.grad
                if grad is None or grad.shape != shape or grad.dtype != dtype:
                    seen = "removed" if grad is None else f"{tuple(grad.shape)} {grad.dtype}"
                    raise ContractBroken(
                        f"balancer '{name}'", SHAPE_AND_DTYPE,
                        f"the gradient of {weight_name} was {tuple(shape)} {dtype} and is now {seen}",
                    )  # fmt: skip
            if not isinstance(returned, Mapping):
                raise ContractBroken(f"balancer '{name}'", NUMBERS, f"it returned {type(returned).__name__}")
            for key, value in returned.items():
                if not isinstance(value, (int, float, torch.Tensor)) or (isinstance(value, torch.Tensor) and value.numel() != 1):
                    raise ContractBroken(f"balancer '{name}'", NUMBERS, f"'{key}' is {type(value).__name__}")
                numbers[f"{PREFIX}{name}/{key}"] = value
        return numbers


def as_floats(numbers: Mapping[str, float | torch.Tensor]) -> dict[str, float]:
    """Numbers a balancer returned, as floats (one host sync for the tensors among them)."""
    tensors = {k: v for k, v in numbers.items() if isinstance(v, torch.Tensor)}
    values = torch.stack([v.detach().float().reshape(()) for v in tensors.values()]).tolist() if tensors else []
    return {**{k: float(v) for k, v in numbers.items() if not isinstance(v, torch.Tensor)}, **dict(zip(tensors, values, strict=True))}
