"""`clip`: CLIP's symmetric contrastive loss, scaled by the encoder's own learnable logit scale."""

from __future__ import annotations

import math

import torch

from mmreg.components import Loss, Step
from mmreg.layers import symmetric_infonce


class CLIPLoss(Loss):
    """CLIPModel's loss: the scale it learns lives in the encoder, so fine-tuning keeps training that one."""

    needs = frozenset({"scores", "logit_scale"})
    sharded = True

    def __init__(self, *, max_scale: float) -> None:
        super().__init__()
        self.max_log_scale = math.log(max_scale)

    def forward(self, step: Step) -> torch.Tensor:
        assert step.scores is not None and step.logit_scale is not None
        logits = step.scores * step.logit_scale.clamp(max=self.max_log_scale).exp()
        return symmetric_infonce(logits, step.offset)
