"""`siglip`: SigLIP's pairwise sigmoid loss, with a learnable scale and bias (Zhai et al. 2023)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmreg.components import Loss, Step


class SigLIP(Loss):
    """Every image-text pair is an independent binary match/no-match problem, so no softmax
    over the batch is needed; the bias offsets the N-1 negatives per positive."""

    needs = frozenset({"scores"})
    sharded = True

    def __init__(self, *, init_scale: float, init_bias: float, learnable: bool) -> None:
        super().__init__()
        log_scale, bias = torch.tensor(math.log(init_scale)), torch.tensor(init_bias)
        wrap = nn.Parameter if learnable else nn.Buffer
        self.log_scale, self.bias = wrap(log_scale), wrap(bias)

    def forward(self, step: Step) -> torch.Tensor:
        assert step.scores is not None
        logits = step.scores * self.log_scale.exp() + self.bias
        n, m = logits.shape
        # +1 matched, -1 otherwise; sharded, this process's rows match at columns offset + i
        signs = 2 * torch.eye(n, m, device=logits.device, dtype=logits.dtype).roll(step.offset or 0, dims=1) - 1
        # Every pair is its own term, so the rows alone give this process's share of the sum (per its n pairs)
        return -F.logsigmoid(signs * logits).sum() / n
