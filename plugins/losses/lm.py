"""`lm`: token-level cross-entropy of a text decoder's next-token predictions (captioning)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmreg.components import Loss, Step
from mmreg.data import IGNORE


class LanguageModeling(Loss):
    """Mean cross-entropy over every scored token (``token_labels`` != -100), with label
    smoothing as BLIP trains its captioning decoder (Li et al. 2022)."""

    needs = frozenset({"token_logits"})

    def __init__(self, *, label_smoothing: float) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, step: Step) -> torch.Tensor:
        assert step.token_logits is not None and step.token_labels is not None
        return F.cross_entropy(
            step.token_logits.flatten(0, 1).float(),
            step.token_labels.flatten(),
            ignore_index=IGNORE,
            label_smoothing=self.label_smoothing,
        )
