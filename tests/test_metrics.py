"""Recall@K on hand-made score matrices."""

from __future__ import annotations

import pytest
import torch

from mmreg.metrics import accuracy, recall_at_k, retrieval_metrics


def test_recall_on_a_hand_checked_matrix():
    # row 0: match ranks 1st; row 1: match ranks 2nd; row 2: match ranks 3rd
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.7, 0.6, 0.2]])
    assert recall_at_k(scores, 1) == pytest.approx(1 / 3)
    assert recall_at_k(scores, 2) == pytest.approx(2 / 3)
    assert recall_at_k(scores, 3) == 1.0
    # columns: text 0 -> image 0 first; text 1 -> image 1 2nd (0.6 beats 0.5); text 2 -> image 2 first
    assert recall_at_k(scores.T, 1) == pytest.approx(2 / 3)


def test_ties_count_against_the_match():
    assert recall_at_k(torch.zeros(4, 4), 1) == 0.0
    assert recall_at_k(torch.zeros(4, 4), 4) == 1.0


def test_retrieval_metrics_average_both_directions():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.7, 0.6, 0.2]])
    m = retrieval_metrics(scores, ks=(1,))
    assert m["recall@1"] == pytest.approx((1 / 3 + 2 / 3) / 2)


def test_recall_needs_square_scores():
    with pytest.raises(ValueError, match="square"):
        recall_at_k(torch.zeros(2, 3), 1)


def test_accuracy():
    assert accuracy(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
