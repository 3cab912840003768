"""Evaluation metrics: retrieval recall@K in both directions, and accuracy, with the
``Evaluation`` accumulators task plugins compose."""

from __future__ import annotations

from typing import Any

import torch

from .components import Encoded, Evaluation, Modality


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


class RetrievalEvaluation(Evaluation):
    """Recall@K of every image against every text of the split, scored by the fusion's ``score``
    (the features of all batches kept, then scored ``rows_per_chunk`` images at a time)."""

    def __init__(self, rows_per_chunk: int = 64) -> None:
        self.names = tuple(retrieval_metric_names())
        self.rows_per_chunk = rows_per_chunk
        self.images: list[Modality] = []
        self.texts: list[Modality] = []
        self.fusion: Any = None

    def update(self, model: torch.nn.Module, features: Encoded, batch: dict[str, torch.Tensor]) -> None:
        self.fusion = model.fusion
        self.images.append(features.image)
        self.texts.append(features.text)

    def compute(self) -> dict[str, float]:
        image, text = Modality.cat(self.images), Modality.cat(self.texts)
        rows = range(0, len(image), self.rows_per_chunk)
        scores = torch.cat([self.fusion.score(image.index(slice(s, s + self.rows_per_chunk)), text) for s in rows])
        return retrieval_metrics(scores.float().cpu())


class AccuracyEvaluation(Evaluation):
    """Accuracy of the head's argmax against ``batch["labels"]`` over matched pairs
    (labels outside the training vocabulary, -100, count as wrong)."""

    names = ("accuracy",)

    def __init__(self, task: Any) -> None:
        self.task, self.correct, self.total = task, 0, 0

    def update(self, model: torch.nn.Module, features: Encoded, batch: dict[str, torch.Tensor]) -> None:
        logits = self.task.forward(model.head, model.fusion, features, batch)["logits"]
        self.correct += (logits.argmax(dim=-1) == batch["labels"]).sum().item()
        self.total += batch["labels"].numel()

    def compute(self) -> dict[str, float]:
        return {"accuracy": self.correct / max(self.total, 1)}
