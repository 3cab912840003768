"""SigLIP's sigmoid loss on hand-checked tensors."""

from __future__ import annotations

import math

import pytest
import torch

from mmreg.components import Modality, Step
from mmreg.plugins import load_plugins
from mmreg_plugins.losses.siglip import SigLIP


def step(scores: torch.Tensor) -> Step:
    return Step(Modality(), Modality(), scores=scores)


def softplus(x: float) -> float:
    """-log sigmoid(-x) = log(1 + e^x): the loss of one pair whose signed logit is -x."""
    return math.log(1 + math.exp(x))


def test_two_by_two_by_hand():
    loss = SigLIP(init_scale=2.0, init_bias=-1.0, learnable=False)
    scores = torch.tensor([[0.5, 0.2], [-0.1, 0.8]])
    # logits = 2 * s - 1 = [[0.0, -0.6], [-1.2, 0.6]]
    # matched (z = +1): -log sig(0.0) = log 2,            -log sig(0.6) = log(1 + e^-0.6)
    # others  (z = -1): -log sig(0.6) = log(1 + e^-0.6),  -log sig(1.2) = log(1 + e^-1.2)
    expected = (math.log(2) + softplus(-0.6) + softplus(-0.6) + softplus(-1.2)) / 2  # / N images
    assert loss(step(scores)).item() == pytest.approx(expected, abs=1e-6)


def test_defaults_t_10_b_minus_10_on_perfect_cosines():
    loss = SigLIP(init_scale=10.0, init_bias=-10.0, learnable=True)
    # cosine 1 on the diagonal -> logit 0 -> log 2 each; cosine 0 elsewhere -> logit -10 -> log(1 + e^-10) each
    expected = (3 * math.log(2) + 6 * softplus(-10.0)) / 3
    assert loss(step(torch.eye(3))).item() == pytest.approx(expected, abs=1e-6)


def test_scale_and_bias_learn():
    loss = SigLIP(init_scale=10.0, init_bias=-10.0, learnable=True)
    assert loss.log_scale.exp().item() == pytest.approx(10.0, rel=1e-6) and loss.bias.item() == -10.0
    loss(step(torch.randn(4, 4))).backward()
    assert loss.log_scale.grad is not None and loss.log_scale.grad.abs() > 0
    assert loss.bias.grad is not None and loss.bias.grad.abs() > 0


def test_fixed_scale_and_bias_are_buffers():
    loss = SigLIP(init_scale=10.0, init_bias=-10.0, learnable=False)
    assert list(loss.parameters()) == [] and {"log_scale", "bias"} <= loss.state_dict().keys()


def test_stable_at_extreme_logits():
    loss = SigLIP(init_scale=1000.0, init_bias=0.0, learnable=False)
    value = loss(step(torch.tensor([[-1.0, 1.0], [1.0, -1.0]])))  # every pair wrong by 1000
    assert torch.isfinite(value) and value.item() == pytest.approx(4 * 1000.0 / 2, rel=1e-6)


def test_build_through_the_registry():
    loss = load_plugins().registry("losses").build("siglip", {})
    assert isinstance(loss, SigLIP) and loss.needs == {"scores"}
    assert loss.log_scale.exp().item() == pytest.approx(10.0) and loss.bias.item() == -10.0
