"""Test-only plugin for `mmreg search` (loaded with --plugin): a loss that raises, a fusion that cannot rank."""

from __future__ import annotations

import torch

from mmreg.components import Fusion, Loss, Modality, Step
from mmreg.hookspecs import hookimpl


class Boom(Loss):
    """Raises on its first step, as a broken plugin would."""

    needs = frozenset({"scores"})

    def forward(self, step: Step) -> torch.Tensor:
        raise RuntimeError("boom: this loss always raises")


class Constant(Fusion):
    """Gives every pair the same score, so recall is 0 (ties count against the match) at every evaluation."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.out_dim = 2 * dim

    def score(self, image: Modality, text: Modality) -> torch.Tensor:
        return 0.0 * (image.pooled @ text.pooled.T)  # zero, yet part of the graph so backward runs

    def fuse(self, image: Modality, text: Modality) -> torch.Tensor:
        return torch.cat([image.pooled, text.pooled], dim=-1)


@hookimpl
def mmreg_register_losses(register):
    register("boom", Boom, help="raises on its first step (tests)")


@hookimpl
def mmreg_register_fusions(register):
    register("constant", Constant, help="the same score for every pair (tests)")
