"""Small building blocks that fusion and encoder plugins share."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .distributed import column_logsumexp
from .modality import full_mask as full_mask  # re-exported from its low-level home
from .params import AttentionBlockParams as AttentionBlockParams  # re-exported from its light home


def match_head(dim: int) -> torch.nn.Module:
    """The learned pair scorer of a pairwise fusion: [N, dim] joint features -> [N] scores.

    Linear -> GELU -> Linear without bias: a constant added to every pair's score
    changes no softmax-based contrastive loss (InfoNCE, CLIP), so such a bias
    would only ever get a gradient of rounding noise; SigLIP's loss has its own bias.
    """
    return torch.nn.Sequential(
        torch.nn.Linear(dim, dim), torch.nn.GELU(), torch.nn.Linear(dim, 1, bias=False), torch.nn.Flatten(0)
    )


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over real tokens only ([N, L, D] -> [N, D]), so padding never dilutes the pooled vector."""
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def symmetric_infonce(logits: torch.Tensor, offset: int | None = None) -> torch.Tensor:
    """Cross-entropy with matches on the diagonal, averaged over rows (image->text) and columns (text->image).

    ``logits`` is the whole [N, N] matrix (``offset`` None), or, sharded under data parallelism
    (``mmreg.components.Step``), this process's rows [b, B] with its pair i at column ``offset + i``:
    then the result is this process's share, b/B of the terms of each direction scaled to a mean
    over its b pairs, and the mean over processes is the whole matrix's loss. The column softmax
    takes its normaliser from every process's rows (``column_logsumexp``). Rows as open_clip's
    ``ClipLoss(local_loss=True)``; its columns come from the other processes' rows, not a second
    [b, B] block, so each process scores b * B pairs, not 2 * b * B.
    """
    if offset is None:
        targets = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    local = torch.arange(logits.shape[0], device=logits.device)
    targets = offset + local
    matched = logits[local, targets]
    text_to_image = (column_logsumexp(logits)[targets] - matched).mean()
    return (F.cross_entropy(logits, targets) + text_to_image) / 2
