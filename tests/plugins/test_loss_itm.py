"""`itm`: which pairs the fusion scores (each positive, then hard negatives per image and per caption),
drawn by which weights, and the loss on them, against hand computation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmreg.components import Modality, PairwiseFusion, Pairs, Step
from mmreg.plugins import load_plugins
from mmreg_plugins.losses.itm import ITM, draw_negatives, itm_pairs, negative_weights


class Lookup(PairwiseFusion):
    """A pair's logit is table[image, caption]: the pooled vectors carry their own index."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table, self.match_head, self.out_dim = table, nn.Identity(), 1

    def fuse(self, image: Modality, text: Modality) -> torch.Tensor:
        return self.table[image.pooled[:, 0].long(), text.pooled[:, 0].long()].unsqueeze(1)


SIMILARITY = torch.tensor(
    [
        [0.9, 0.8, 0.1, 0.3],
        [0.2, 0.9, 0.7, 0.1],
        [0.6, 0.0, 0.9, 0.5],
        [0.4, 0.3, 0.2, 0.9],
    ]
)  # image rows, caption columns; the diagonal matches


def pairs(offset: int = 0, rows: int = 4, matches: torch.Tensor | None = None, table: torch.Tensor | None = None) -> Pairs:
    index = Modality(pooled=torch.arange(4.0).unsqueeze(1))
    fusion = Lookup(torch.zeros(4, 4) if table is None else table)
    return Pairs(index, index, SIMILARITY, torch.eye(4, dtype=torch.bool) if matches is None else matches, offset, rows, fusion)


def test_top_picks_the_most_similar_non_matching_caption_and_image():
    rows, cols, labels = itm_pairs(pairs(), 1, "top", 0.07)
    # positives (0,0) (1,1) (2,2) (3,3); each image's most similar other caption: 0->1 (0.8), 1->2 (0.7),
    # 2->0 (0.6), 3->0 (0.4); each caption's most similar other image: 0->2 (0.6), 1->0 (0.8), 2->1 (0.7), 3->2 (0.5)
    assert rows.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 2, 0, 1, 2]
    assert cols.tolist() == [0, 1, 2, 3, 1, 2, 0, 0, 0, 1, 2, 3]
    assert labels.tolist() == [1, 1, 1, 1] + [0] * 8


def test_captions_of_the_same_image_are_never_its_negatives():
    matches = torch.eye(4, dtype=torch.bool)
    matches[0, 1] = matches[1, 0] = True  # captions 0 and 1 describe one picture (images 0 and 1 are that picture)
    rows, cols, _ = itm_pairs(pairs(matches=matches), 1, "top", 0.07)
    assert rows[4:8].tolist() == [0, 1, 2, 3] and cols[4:8].tolist() == [3, 2, 0, 0]  # 0 skips caption 1 (0.8) for 3 (0.3)
    assert cols[8:].tolist() == [0, 1, 2, 3] and rows[8:].tolist() == [2, 3, 1, 2]  # caption 1 skips image 0 (0.8) for 3 (0.3)


def test_a_process_scores_its_own_pairs_against_every_process():
    rows, cols, labels = itm_pairs(pairs(offset=2, rows=2), 1, "top", 0.07)  # the second of two processes
    assert rows.tolist() == [2, 3, 2, 3, 1, 2] and cols.tolist() == [2, 3, 0, 0, 2, 3] and labels.sum() == 2


def test_softmax_weights_are_the_temperature_softmax_over_non_matches_and_draws_follow_them():
    weights = negative_weights(SIMILARITY, torch.eye(4, dtype=torch.bool), 0.5)
    e = [math.exp(s / 0.5) for s in (0.8, 0.1, 0.3)]  # image 0's non-matching captions 1, 2, 3
    assert weights[0].tolist() == pytest.approx([0.0, e[0] / sum(e), e[1] / sum(e), e[2] / sum(e)], abs=1e-6)
    torch.manual_seed(0)
    draws = torch.cat([draw_negatives(SIMILARITY, torch.eye(4, dtype=torch.bool), 1, "softmax", 0.5) for _ in range(4000)], dim=1)
    assert not (draws == torch.arange(4).unsqueeze(1)).any()  # never the match
    frequency = torch.stack([(draws == c).float().mean(dim=1) for c in range(4)], dim=1)
    torch.testing.assert_close(frequency, weights, atol=0.03, rtol=0)
    torch.manual_seed(0)
    again = torch.cat([draw_negatives(SIMILARITY, torch.eye(4, dtype=torch.bool), 1, "softmax", 0.5) for _ in range(4000)], dim=1)
    assert torch.equal(draws, again)  # from torch's seeded generator: a run repeats


def test_the_loss_is_binary_cross_entropy_over_the_positives_and_negatives():
    table = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.3, 1.5, -0.5, 0.2], [1.0, 0.1, 0.8, -2.0], [0.4, 0.0, 0.6, 3.0]])
    loss = ITM(negatives=1, sampling="top", temperature=0.07)
    value = loss(Step(Modality(), Modality(), pairs=pairs(table=table))).item()

    def bce(logit: float, label: int) -> float:
        return math.log(1 + math.exp(-logit)) if label else math.log(1 + math.exp(logit))

    positives = [bce(table[i, i].item(), 1) for i in range(4)]
    chosen = [(0, 1), (1, 2), (2, 0), (3, 0), (2, 0), (0, 1), (1, 2), (2, 3)]  # from the first test
    negatives = [bce(table[i, j].item(), 0) for i, j in chosen]
    assert value == pytest.approx((sum(positives) + sum(negatives)) / 12, abs=1e-6)


def test_more_negatives_than_a_row_has_take_what_there_is():
    matches = torch.ones(4, 4, dtype=torch.bool)
    matches[0, 3] = matches[3, 0] = False  # each query has at most one non-match, some none
    assert draw_negatives(SIMILARITY, matches, 3, "softmax", 0.07).shape == (4, 0)
    assert draw_negatives(SIMILARITY, torch.eye(4, dtype=torch.bool), 5, "top", 0.07).shape == (4, 3)


def test_registered_with_its_parameters():
    entry = load_plugins().registry("losses").get("itm")
    assert entry.validate({}).model_dump() == {"negatives": 1, "sampling": "softmax", "temperature": 0.07}
