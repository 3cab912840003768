"""Small building blocks that fusion and encoder plugins share."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over real tokens only ([N, L, D] -> [N, D]), so padding never dilutes the pooled vector."""
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def full_mask(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The mask, or all-True when a modality has no padding."""
    return mask if mask is not None else torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)


def symmetric_infonce(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with matches on the diagonal, averaged over rows (image->text) and columns (text->image)."""
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
