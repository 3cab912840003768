"""`multiview`: agreement between two augmented views of each image, plus image-text alignment."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from mmreg.components import Loss, Modality, Step
from mmreg.hookspecs import hookimpl
from mmreg.layers import masked_mean, symmetric_infonce


class MultiViewParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.1, gt=0, description="fixed temperature of the view consistency (SimCLR: 0.1)")
    alignment_temperature: float = Field(0.07, gt=0, description="initial temperature of the alignment, learned (CLIP: 0.07)")
    max_scale: float = Field(100.0, gt=0, description="upper bound on 1/temperature of the alignment, as CLIP clamps it")
    consistency_weight: float = Field(1.0, ge=0, description="weight of the view-consistency term")
    alignment_weight: float = Field(1.0, ge=0, description="weight of the image-text alignment term")


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


@hookimpl
def mmreg_register_losses(register):
    register(
        "multiview",
        MultiView,
        params=MultiViewParams,
        help="InfoNCE between two augmented views of each image plus symmetric image-text InfoNCE",
    )
