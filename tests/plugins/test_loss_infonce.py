"""InfoNCE on hand-checked tensors."""

from __future__ import annotations

import math

import pytest
import torch

from mmreg.components import Modality, Step
from mmreg_plugins.losses.infonce import InfoNCE


def step(scores: torch.Tensor) -> Step:
    return Step(Modality(), Modality(), scores=scores)


def test_two_by_two_by_hand():
    # scale 1 (temperature 1): logits = scores
    loss = InfoNCE(temperature=1.0, learnable=False, max_scale=100.0)
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # every row and column: -log(e / (e + 1))
    expected = -math.log(math.e / (math.e + 1))
    assert loss(step(scores)).item() == pytest.approx(expected, abs=1e-6)


def test_asymmetric_matrix_averages_both_directions():
    loss = InfoNCE(temperature=0.5, learnable=False, max_scale=100.0)
    s = torch.tensor([[0.5, 0.0], [0.5, 0.0]])
    logits = s / 0.5  # [[1, 0], [1, 0]]
    i2t = (-math.log(math.e / (math.e + 1)) + -math.log(1 / (math.e + 1))) / 2  # rows
    t2i = (-math.log(math.e / (2 * math.e)) + -math.log(1 / 2)) / 2  # columns: [1, 1] and [0, 0]
    assert loss(step(s)).item() == pytest.approx((i2t + t2i) / 2, abs=1e-6)
    assert logits.shape == (2, 2)


def test_temperature_starts_at_0_07_learns_and_is_clamped():
    loss = InfoNCE(temperature=0.07, learnable=True, max_scale=100.0)
    assert loss.scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    assert loss.log_scale.requires_grad
    value = loss(step(torch.randn(4, 4)))
    value.backward()
    assert loss.log_scale.grad is not None and loss.log_scale.grad.abs() > 0
    with torch.no_grad():
        loss.log_scale.fill_(10.0)
    assert loss.scale.item() == pytest.approx(100.0, rel=1e-5)


def test_fixed_temperature_is_a_buffer_not_a_parameter():
    loss = InfoNCE(temperature=0.1, learnable=False, max_scale=100.0)
    assert list(loss.parameters()) == [] and "log_scale" in loss.state_dict()


def test_perfect_separation_gives_near_zero_loss():
    loss = InfoNCE(temperature=0.01, learnable=False, max_scale=1000.0)
    assert loss(step(torch.eye(8))).item() < 1e-6


@pytest.mark.parametrize(
    "scores",
    [
        torch.randn(5, 5, generator=torch.Generator().manual_seed(0)),
        torch.tensor([[0.9, 0.1, -0.3], [0.8, 0.2, 0.0], [-0.5, 0.7, 0.4]]),  # not symmetric
    ],
)
def test_fixed_temperature_equals_transformers_clip_loss(scores: torch.Tensor):
    # transformers 5 renamed CLIP's clip_loss; it takes the text->image logits (logits_per_text)
    from transformers.models.clip.modeling_clip import image_text_contrastive_loss

    loss = InfoNCE(temperature=0.07, learnable=False, max_scale=100.0)
    expected = image_text_contrastive_loss((scores / 0.07).T)
    assert loss(step(scores)).item() == pytest.approx(expected.item(), abs=1e-6)


def test_transposing_the_scores_leaves_the_loss_unchanged():
    loss = InfoNCE(temperature=0.2, learnable=False, max_scale=100.0)
    s = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
    assert loss(step(s)).item() == pytest.approx(loss(step(s.T)).item(), abs=1e-6)


def test_build_through_the_registry():
    from mmreg.plugins import load_plugins

    loss = load_plugins().registry("losses").build("infonce", {"temperature": 0.1, "learnable": False})
    assert isinstance(loss, InfoNCE) and loss.scale.item() == pytest.approx(10.0, rel=1e-5)
