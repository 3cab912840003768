"""`bce`: binary cross-entropy over answer logits against soft scores, as ViLT trains VQA."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmreg.components import Loss, Step
from mmreg.errors import IncompatibleParts


class SoftBinaryCrossEntropy(Loss):
    """``binary_cross_entropy_with_logits(logits, labels) * C`` for logits and soft-score labels [N, C]
    (the mean over answers and questions, times the number of answers), exactly as transformers'
    ``ViltForQuestionAnswering`` computes its loss (Kim et al. 2021). Labels must be float scores in
    [0, 1] (the ``vqa`` task's), not class indices."""

    needs = frozenset({"logits", "labels"})

    def forward(self, step: Step) -> torch.Tensor:
        assert step.logits is not None and step.labels is not None
        if step.labels.shape != step.logits.shape:
            raise IncompatibleParts("loss 'bce' reads soft scores [N, C] but this task gives class indices; use it with --task vqa, or --loss ce")
        return F.binary_cross_entropy_with_logits(step.logits, step.labels) * step.labels.shape[1]
