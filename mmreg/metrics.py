"""Evaluation metrics: retrieval recall@K in both directions, and accuracy."""

from __future__ import annotations

import torch


def recall_at_k(scores: torch.Tensor, k: int) -> float:
    """Fraction of rows whose matching column (the diagonal) ranks in the top ``k``.

    Ties count against the match: it must score strictly higher than all but
    k-1 others, so a constant scorer gets no credit.
    """
    n = scores.shape[0]
    if scores.shape[1] != n:
        raise ValueError(f"recall needs square scores with matches on the diagonal, got {tuple(scores.shape)}")
    positive = scores.diagonal().unsqueeze(1)
    rank = (scores >= positive).sum(dim=1) - 1  # others scoring at least as high
    return (rank < k).float().mean().item()


def retrieval_metric_names(ks: tuple[int, ...] = (1, 5, 10)) -> list[str]:
    """The keys ``retrieval_metrics`` returns, in its order."""
    return [f"{kind}recall@{k}" for k in ks for kind in ("i2t_", "t2i_", "")]


def retrieval_metrics(scores: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Image->text and text->image recall@K, and their mean as ``recall@K``."""
    out: dict[str, float] = {}
    for k in ks:
        i2t = recall_at_k(scores, k)
        t2i = recall_at_k(scores.T, k)
        out[f"i2t_recall@{k}"] = i2t
        out[f"t2i_recall@{k}"] = t2i
        out[f"recall@{k}"] = (i2t + t2i) / 2
    return out


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(dim=-1) == labels).float().mean().item()
