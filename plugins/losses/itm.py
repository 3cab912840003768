"""`itm`: image-text matching on in-batch hard negatives (ALBEF, Li et al. NeurIPS 2021, section 3.2;
BLIP, Li et al. 2022). A pairwise fusion scores each positive pair and, for every image and every
caption, K negatives drawn from the contrastive similarities, instead of all N x N pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmreg.components import Loss, Pairs, Step


def negative_weights(similarity: torch.Tensor, matches: torch.Tensor, temperature: float) -> torch.Tensor:
    """[Q, C] the probability of drawing each candidate as a query's negative: the softmax of
    ``similarity / temperature`` over the candidates that do not match the query (``matches`` False),
    0 at matches (ALBEF's ``weights_i2t``, with the diagonal and same-image captions zeroed, as BLIP)."""
    logits = (similarity / temperature).masked_fill(matches, float("-inf"))
    return logits.softmax(dim=1).nan_to_num(0.0)  # a query matching every candidate has none to draw


def draw_negatives(similarity: torch.Tensor, matches: torch.Tensor, k: int, sampling: str, temperature: float) -> torch.Tensor:
    """[Q, K'] candidate indices of each query's hard negatives, K' = min(k, the fewest non-matches of
    any query): drawn without replacement by ``negative_weights`` (``softmax``, from torch's seeded
    global generator, so a run repeats and resumes exactly) or the K' most similar (``top``)."""
    k = min(k, int((~matches).sum(dim=1).min()))
    if k == 0:
        return torch.empty(len(similarity), 0, dtype=torch.long, device=similarity.device)
    if sampling == "top":
        return similarity.masked_fill(matches, float("-inf")).topk(k, dim=1).indices
    return torch.multinomial(negative_weights(similarity, matches, temperature), k, replacement=False)


def itm_pairs(pairs: Pairs, k: int, sampling: str, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, cols, labels) of the pairs this process scores: each of its own pairs (label 1), then
    each of its images with K negative captions, then each of its captions with K negative images
    (label 0), all indices global (``Pairs``)."""
    own = torch.arange(pairs.offset, pairs.offset + pairs.rows, device=pairs.similarity.device)
    similarity, matches = pairs.similarity, pairs.matches
    negative_texts = draw_negatives(similarity[own], matches[own], k, sampling, temperature)  # [b, K]
    negative_images = draw_negatives(similarity[:, own].T, matches[:, own].T, k, sampling, temperature)  # [b, K]
    per = negative_texts.shape[1]
    rows = torch.cat([own, own.repeat_interleave(per), negative_images.reshape(-1)])
    cols = torch.cat([own, negative_texts.reshape(-1), own.repeat_interleave(negative_images.shape[1])])
    labels = torch.cat([torch.ones(len(own)), torch.zeros(len(rows) - len(own))]).to(similarity.device)
    return rows, cols, labels


class ITM(Loss):
    """Binary cross-entropy of the fusion's match logit on this process's positives and their hard
    negatives, the mean over the (1 + 2K) * b pairs (ALBEF's two-way softmax over a match and a
    no-match logit is this sigmoid on their difference).

    Read with a contrastive loss on ``scores``: those similarities train the space the negatives are
    drawn from. Negatives whose similarity is high are the pairs the cross-encoder has to learn to
    tell apart; the cost grows as b (1 + 2K) fusion passes, not b x B.
    """

    needs = frozenset({"pairs"})
    sharded = True  # each process scores its own pairs' matches: the mean over processes is the global batch's

    def __init__(self, *, negatives: int, sampling: str, temperature: float) -> None:
        super().__init__()
        self.negatives, self.sampling, self.temperature = negatives, sampling, temperature

    def forward(self, step: Step) -> torch.Tensor:
        assert step.pairs is not None
        rows, cols, labels = itm_pairs(step.pairs, self.negatives, self.sampling, self.temperature)
        logits = step.pairs.score(rows, cols).float()
        return F.binary_cross_entropy_with_logits(logits, labels)
