"""`ce`: cross-entropy over task-head logits, for classification and VQA."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmreg.components import Loss, Step


class CrossEntropy(Loss):
    needs = frozenset({"logits", "labels"})

    def __init__(self, *, label_smoothing: float) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, step: Step) -> torch.Tensor:
        assert step.logits is not None and step.labels is not None
        return F.cross_entropy(step.logits, step.labels, label_smoothing=self.label_smoothing)
