"""`multiview`: agreement between two augmented views of each image, plus image-text alignment."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmreg.components import Loss, Modality, Step
from mmreg.layers import masked_mean, symmetric_infonce


def pooled(view: Modality) -> torch.Tensor:
    """The view's pooled vectors; a token-reading fusion leaves only tokens, so pool those."""
    if view.pooled is not None:
        return view.pooled
    assert view.tokens is not None
    return masked_mean(view.tokens, view.mask)


class MultiView(Loss):
    """Contrasting the views (rather than pulling them together by MSE, as the source does)
    keeps other images as negatives, so features cannot collapse to a constant."""

    needs = frozenset({"views", "scores"})

    def __init__(
        self,
        *,
        temperature: float,
        alignment_temperature: float,
        max_scale: float,
        consistency_weight: float,
        alignment_weight: float,
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / alignment_temperature)))
        self.max_log_scale = math.log(max_scale)
        self.consistency_weight, self.alignment_weight = consistency_weight, alignment_weight

    def consistency(self, views: tuple[Modality, Modality]) -> torch.Tensor:
        """Each view must pick out the other view of the same image among the batch's images."""
        a, b = (F.normalize(pooled(v), dim=-1) for v in views)
        return symmetric_infonce(a @ b.T / self.temperature)

    def alignment(self, scores: torch.Tensor) -> torch.Tensor:
        return symmetric_infonce(scores * self.log_scale.clamp(max=self.max_log_scale).exp())

    def forward(self, step: Step) -> torch.Tensor:
        assert step.views is not None and step.scores is not None
        consistency, alignment = self.consistency(step.views), self.alignment(step.scores)
        return self.consistency_weight * consistency + self.alignment_weight * alignment
