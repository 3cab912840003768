"""Data-parallel helpers: gather features with their gradients across processes."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .components import Modality


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums every process's gradient for the global batch and
    hands each process the slice of its own rows, so the loss over the global batch
    trains every process's encoder exactly as one process would (open_clip's gather_with_grad)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rows, ctx.rank = tensor.shape[0], torch.distributed.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        torch.distributed.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def _gather(tensor: torch.Tensor) -> torch.Tensor:
    return _GatherWithGrad.apply(tensor)


def gather_modality(features: Modality) -> Modality:
    """Every process's features for the global batch, in rank order, with gradients.

    Token sequences are padded to the longest across processes first (captions are
    padded per batch), so the gathered mask still marks the real tokens.
    """
    pooled = None if features.pooled is None else _gather(features.pooled)
    if features.tokens is None:
        return Modality(pooled)
    tokens = features.tokens
    mask = features.mask if features.mask is not None else torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    length = torch.tensor([tokens.shape[1]], device=tokens.device)
    torch.distributed.all_reduce(length, op=torch.distributed.ReduceOp.MAX)
    pad = int(length.item()) - tokens.shape[1]
    tokens = F.pad(tokens, (0, 0, 0, pad))
    mask = F.pad(mask, (0, pad), value=False)
    masks = [torch.empty_like(mask) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(masks, mask)
    return Modality(pooled, _gather(tokens), torch.cat(masks))
