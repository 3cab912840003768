"""The multi-view loss on hand-checked tensors."""

from __future__ import annotations

import math

import pytest
import torch

from mmreg.components import Modality, Step
from mmreg.plugins import load_plugins
from mmreg_plugins.losses.infonce import InfoNCE
from mmreg_plugins.losses.multiview import MultiView


def multiview(**params: float) -> MultiView:
    defaults = {
        "temperature": 0.1,
        "alignment_temperature": 0.07,
        "max_scale": 100.0,
        "consistency_weight": 1.0,
        "alignment_weight": 1.0,
    }
    return MultiView(**{**defaults, **params})


def step(view0: torch.Tensor, view1: torch.Tensor, scores: torch.Tensor | None = None) -> Step:
    scores = torch.eye(len(view0)) if scores is None else scores
    return Step(Modality(), Modality(), scores=scores, views=(Modality(view0), Modality(view1)))


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_consistency_by_hand():
    loss = multiview(temperature=0.5, alignment_weight=0.0)
    view0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    view1 = torch.tensor([[3.0, 0.0], [1.0, 1.0]])  # normalised: [1, 0], [1, 1] / sqrt 2
    r = math.sqrt(2)
    # cosines [[1, 1/r], [0, 1/r]] / 0.5 = logits [[2, r], [0, r]]
    rows = (-math.log(math.e**2 / (math.e**2 + math.e**r)) - math.log(math.e**r / (1 + math.e**r))) / 2
    cols = (-math.log(math.e**2 / (math.e**2 + 1)) + math.log(2)) / 2  # columns [2, 0] and [r, r]
    assert loss(step(view0, view1)).item() == pytest.approx((rows + cols) / 2, abs=1e-6)


def test_identical_views_agree_better_than_unrelated_ones():
    loss = multiview(alignment_weight=0.0)
    a, b = randn(6, 8, seed=0), randn(6, 8, seed=1)
    assert loss(step(a, a)).item() < loss(step(a, b)).item()


def test_reads_both_views_symmetrically():
    loss = multiview()
    a, b, c = randn(4, 8, seed=0), randn(4, 8, seed=1), randn(4, 8, seed=2)
    scores = randn(4, 4, seed=3)
    assert loss(step(a, b, scores)).item() == pytest.approx(loss(step(b, a, scores)).item(), abs=1e-6)
    assert loss(step(a, c, scores)).item() != pytest.approx(loss(step(a, b, scores)).item(), abs=1e-3)


def test_weights_combine_the_two_terms():
    a, b, scores = randn(4, 8, seed=0), randn(4, 8, seed=1), randn(4, 4, seed=2)
    consistency = multiview(alignment_weight=0.0)(step(a, b, scores))
    alignment = multiview(consistency_weight=0.0)(step(a, b, scores))
    infonce = InfoNCE(temperature=0.07, learnable=False, max_scale=100.0)(step(a, b, scores))
    assert alignment.item() == pytest.approx(infonce.item(), abs=1e-6)
    weighted = multiview(consistency_weight=0.3, alignment_weight=2.0)(step(a, b, scores))
    assert weighted.item() == pytest.approx(0.3 * consistency.item() + 2.0 * alignment.item(), abs=1e-5)


def test_token_views_are_pooled_over_real_tokens_only():
    loss = multiview(alignment_weight=0.0)
    tokens0, tokens1 = randn(3, 4, 8, seed=0), randn(3, 4, 8, seed=1)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True], [True, False, False, False]])
    padded0, padded1 = tokens0.clone(), tokens1.clone()
    padded0[~mask], padded1[~mask] = 100.0, -100.0  # padding must not move the pooled vector
    views = (Modality(tokens=padded0, mask=mask), Modality(tokens=padded1, mask=mask))
    token_step = Step(Modality(), Modality(), scores=torch.eye(3), views=views)
    pooled0 = torch.stack([tokens0[0, :2].mean(0), tokens0[1].mean(0), tokens0[2, 0]])
    pooled1 = torch.stack([tokens1[0, :2].mean(0), tokens1[1].mean(0), tokens1[2, 0]])
    assert loss(token_step).item() == pytest.approx(loss(step(pooled0, pooled1)).item(), abs=1e-6)


def test_alignment_temperature_learns_and_consistency_temperature_is_fixed():
    loss = multiview()
    assert [name for name, _ in loss.named_parameters()] == ["log_scale"]
    assert loss.log_scale.exp().item() == pytest.approx(1 / 0.07, rel=1e-5)
    loss(step(randn(4, 8, seed=0), randn(4, 8, seed=1), randn(4, 4, seed=2))).backward()
    assert loss.log_scale.grad is not None and loss.log_scale.grad.abs() > 0


def test_build_through_the_registry():
    loss = load_plugins().registry("losses").build("multiview", {"alignment_weight": 0.5})
    assert isinstance(loss, MultiView) and loss.needs == {"views", "scores"}
    assert loss.temperature == 0.1 and loss.consistency_weight == 1.0 and loss.alignment_weight == 0.5
