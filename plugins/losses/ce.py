"""`ce`: cross-entropy over task-head logits, for classification and VQA."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from mmreg.components import Loss, Step
from mmreg.hookspecs import hookimpl


class CrossEntropyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label_smoothing: float = Field(0.0, ge=0, lt=1, description="mass spread uniformly over the other classes")


class CrossEntropy(Loss):
    needs = frozenset({"logits", "labels"})

    def __init__(self, *, label_smoothing: float) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, step: Step) -> torch.Tensor:
        assert step.logits is not None and step.labels is not None
        return F.cross_entropy(step.logits, step.labels, label_smoothing=self.label_smoothing)


@hookimpl
def mmreg_register_losses(register):
    register("ce", CrossEntropy, params=CrossEntropyParams, help="cross-entropy over class or answer logits")
