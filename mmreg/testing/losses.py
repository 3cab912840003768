"""The loss contract: a finite scalar, gradient to every declared input, symmetry where claimed, small batches."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from ..components import Loss, Modality, PairwiseFusion, Pairs, Step
from ..contracts import LOSS_SCALAR, loss_problem
from ..errors import MmregError
from .contract import expect

KNOWN_NEEDS = frozenset({"scores", "logits", "labels", "token_logits", "views", "logit_scale", "pairs"})


class ProductFusion(PairwiseFusion):
    """The kit's pairwise fusion for losses reading "pairs": ``fuse`` the product of the pooled
    vectors [N, dim], ``match_head`` a linear map of it to one logit."""

    def __init__(self, dim: int, generator: torch.Generator) -> None:
        super().__init__()
        self.match_head, self.out_dim = nn.Linear(dim, 1), dim
        with torch.no_grad():
            for weight in self.match_head.parameters():
                weight.copy_(torch.randn(weight.shape, generator=generator))

    def fuse(self, image: Modality, text: Modality) -> torch.Tensor:
        return image.pooled * text.pooled  # type: ignore[operator]


def sample_step(needs: frozenset[str], n: int, *, dim: int = 8, classes: int = 3, soft_labels: bool = False, seed: int = 0) -> Step:
    """A ``Step`` for a batch of ``n`` holding the fields in ``needs``, float inputs as leaves requiring grad:
    scores [n, n], logits [n, classes], labels [n] class indices (or soft scores [n, classes] in [0, 1]),
    token_logits [n, 5, 11] with token_labels [n, 5] (the last -100), views two [n, dim] pooled views,
    logit_scale a scalar (log scale 2.0), pairs (``Pairs``) over the pooled image and text leaves with
    the kit's ``ProductFusion``."""
    g = torch.Generator().manual_seed(seed)

    def leaf(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).requires_grad_(True)

    step = Step(Modality(pooled=leaf(n, dim)), Modality(pooled=leaf(n, dim)))
    if "scores" in needs:
        step.scores = leaf(n, n)
    if "logits" in needs:
        step.logits = leaf(n, classes)
    if "labels" in needs:
        step.labels = torch.rand(n, classes, generator=g) if soft_labels else torch.randint(classes, (n,), generator=g)
    if "token_logits" in needs:
        step.token_logits = leaf(n, 5, 11)
        step.token_labels = torch.randint(11, (n, 5), generator=g)
        step.token_labels[:, -1] = -100
    if "views" in needs:
        step.views = (Modality(pooled=leaf(n, dim)), Modality(pooled=leaf(n, dim)))
    if "logit_scale" in needs:
        step.logit_scale = torch.tensor(2.0, requires_grad=True)
    if "pairs" in needs:  # one process: every pair its own, the diagonal matched; scores the contrastive cosine
        similarity = F.normalize(step.image.pooled.detach(), dim=-1) @ F.normalize(step.text.pooled.detach(), dim=-1).T  # type: ignore[union-attr]
        matches = torch.eye(n, dtype=torch.bool)
        step.pairs = Pairs(step.image, step.text, similarity, matches, 0, n, ProductFusion(dim, g))
    return step


def _inputs(step: Step, needs: frozenset[str]) -> dict[str, torch.Tensor]:
    """The float tensors of the declared fields, by field name (each view separately)."""
    out = {name: getattr(step, name) for name in ("scores", "logits", "token_logits", "logit_scale") if name in needs}
    if "pairs" in needs:
        out.update({"pairs.image": step.image.pooled, "pairs.text": step.text.pooled})  # type: ignore[dict-item]
    if "views" in needs and step.views is not None:
        out.update({"views[0]": step.views[0].pooled, "views[1]": step.views[1].pooled})
    return out


def check_loss(loss: Loss, *, symmetric: bool | None = None, batch: int = 4) -> None:
    """A loss is a finite scalar (one element; ``mmreg.contracts.loss_problem``, which a run also checks
    on its first batch, all but finiteness) at batch 1, 2 and ``batch``; gradient reaches every input it
    declares in ``needs``; and where it claims symmetry (``symmetric``, else the loss's ``symmetric``
    attribute) swapping images and texts (``scores.T``) leaves it unchanged.

    Labels are class indices, or soft scores [N, C] for a loss that refuses indices with a typed
    error (``bce``). Raises ContractViolation naming the broken contract."""
    who = f"loss {type(loss).__name__}"
    needs = frozenset(loss.needs)
    unknown = sorted(needs - KNOWN_NEEDS)
    expect(not unknown, who, "needs names Step fields", f"unknown fields {unknown}; known: {sorted(KNOWN_NEEDS)}")
    soft = False
    try:
        loss(sample_step(needs, batch))
    except MmregError:
        if "labels" not in needs:
            raise
        soft = True  # it reads soft scores [N, C], not class indices
    for n in sorted({1, 2, batch}):
        problem = loss_problem(loss(sample_step(needs, n, soft_labels=soft)))
        expect(problem is None, who, LOSS_SCALAR, f"at batch {n} it {problem}")

    step = sample_step(needs, batch, soft_labels=soft)
    loss.zero_grad()
    loss(step).backward()
    for name, tensor in _inputs(step, needs).items():
        grad = tensor.grad
        expect(grad is not None and bool(grad.abs().sum() > 0), who, "gradient reaches every input it needs",
               f"no gradient reached '{name}'" if grad is None else f"the gradient of '{name}' is all zero")  # fmt: skip

    claims = loss.symmetric if symmetric is None else symmetric
    if claims and "scores" in needs:
        step = sample_step(needs, batch, soft_labels=soft)
        swapped = dataclasses.replace(step, image=step.text, text=step.image, scores=step.scores.detach().T)  # type: ignore[union-attr]
        with torch.no_grad():
            a, b = loss(step), loss(swapped)
        expect(torch.allclose(a, b, atol=1e-5, rtol=1e-5), who, "symmetric in images and texts",
               f"{a.item():.6g} on the scores, {b.item():.6g} on their transpose")  # fmt: skip
