"""`clip`: CLIP's symmetric contrastive loss, scaled by the encoder's own learnable logit scale."""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field

from mmreg.components import Loss, Step
from mmreg.hookspecs import hookimpl
from mmreg.layers import symmetric_infonce


class CLIPLossParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_scale: float = Field(100.0, gt=0, description="upper bound on exp(logit_scale), as CLIP's training clamps it")


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


@hookimpl
def mmreg_register_losses(register):
    register(
        "clip",
        CLIPLoss,
        params=CLIPLossParams,
        help="CLIP's symmetric contrastive loss with the encoder's own logit scale (needs the clip encoder)",
    )
