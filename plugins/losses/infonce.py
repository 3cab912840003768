"""`infonce`: symmetric image->text and text->image cross-entropy over pairwise scores."""

from __future__ import annotations

import math

import torch
from torch import nn

from mmreg.components import Loss, Step
from mmreg.layers import symmetric_infonce


class InfoNCE(Loss):
    """Matched pairs lie on the diagonal of the [N, N] scores; every other entry is a negative."""

    needs = frozenset({"scores"})
    sharded = True

    def __init__(self, *, temperature: float, learnable: bool, max_scale: float) -> None:
        super().__init__()
        log_scale = torch.tensor(math.log(1.0 / temperature))
        self.log_scale = nn.Parameter(log_scale) if learnable else nn.Buffer(log_scale)
        self.max_log_scale = math.log(max_scale)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=self.max_log_scale).exp()

    def forward(self, step: Step) -> torch.Tensor:
        assert step.scores is not None
        logits = step.scores * self.scale
        return symmetric_infonce(logits, step.offset)
