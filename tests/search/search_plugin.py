"""Test-only plugin for `mmreg search` (loaded with --plugin): a loss that raises, a loss that waits
on a file so a test can kill its worker mid-trial, a fusion that cannot rank."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from mmreg.components import Fusion, Loss, Modality, Step
from mmreg.hookspecs import hookimpl
from mmreg.layers import symmetric_infonce


class Boom(Loss):
    """Raises on its first step, as a broken plugin would."""

    needs = frozenset({"scores"})

    def forward(self, step: Step) -> torch.Tensor:
        raise RuntimeError("boom: this loss always raises")


class Hold(Loss):
    """InfoNCE at a fixed temperature that first waits, at every step, while a file named ``hold`` exists in
    the working directory: the trial stays running until a test removes the file or kills the worker."""

    needs = frozenset({"scores"})

    def forward(self, step: Step) -> torch.Tensor:
        while Path("hold").exists():
            time.sleep(0.1)
        assert step.scores is not None
        return symmetric_infonce(step.scores / 0.07, step.offset)


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
    register("hold", Hold, help="waits at each step while ./hold exists (tests)")


@hookimpl
def mmreg_register_fusions(register):
    register("constant", Constant, help="the same score for every pair (tests)")
