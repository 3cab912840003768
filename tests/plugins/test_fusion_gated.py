"""The gated fusion on small hand-checked tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmreg.components import Modality
from mmreg.errors import InvalidParams
from mmreg.layers import masked_mean
from mmreg_plugins.fusions.gated import GatedFusion


def make(dim=8, layers=1) -> GatedFusion:
    torch.manual_seed(0)
    return GatedFusion(dim=dim, heads=2, layers=layers, dropout=0.0, ffn_mult=2).eval()


def modalities(n=3, li=4, lt=5, dim=8, text_lengths=(5, 3, 2)):
    g = torch.Generator().manual_seed(1)
    mask = torch.zeros(n, lt, dtype=torch.bool)
    for i, length in enumerate(text_lengths[:n]):
        mask[i, :length] = True
    return Modality(tokens=torch.randn(n, li, dim, generator=g)), Modality(tokens=torch.randn(n, lt, dim, generator=g), mask=mask)


def test_masked_mean_by_hand():
    tokens = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(tokens, torch.tensor([[True, True, False]])).item() == 2.0
    assert masked_mean(tokens, None).item() == pytest.approx(104 / 3)


def test_gate_mixes_pooled_vision_and_text():
    """With attention and feed-forward zeroed, fuse = norm(g * mean(v) + (1 - g) * mean(t))."""
    fusion = make()
    for block in fusion.blocks:
        for p in block.parameters():
            nn.init.zeros_(p)
    with torch.no_grad():
        fusion.gate[0].weight.zero_()
        fusion.gate[0].bias.fill_(0.0)  # sigmoid(0) = 0.5
    image, text = modalities()
    expected_mix = 0.5 * image.tokens.mean(1) + 0.5 * masked_mean(text.tokens, text.mask)
    expected = nn.functional.layer_norm(expected_mix, (8,), fusion.norm.weight, fusion.norm.bias)
    torch.testing.assert_close(fusion.fuse(image, text), expected)
    with torch.no_grad():
        fusion.gate[0].bias.fill_(50.0)  # gate ~ 1: vision only
    vision_only = nn.functional.layer_norm(image.tokens.mean(1), (8,), fusion.norm.weight, fusion.norm.bias)
    torch.testing.assert_close(fusion.fuse(image, text), vision_only, atol=1e-4, rtol=1e-4)


def test_padding_never_changes_the_result():
    fusion = make(layers=2)
    image, text = modalities()
    before = fusion.fuse(image, text)
    garbage = text.tokens.clone()
    garbage[~text.mask] = 1e3
    after = fusion.fuse(image, Modality(tokens=garbage, mask=text.mask))
    torch.testing.assert_close(before, after)


def test_score_is_fuse_of_every_pair_then_the_head():
    fusion = make()
    image, text = modalities()
    scores = fusion.score(image, text)
    assert scores.shape == (3, 3)
    for i in range(3):
        for j in range(3):
            pair = fusion.match_head(fusion.fuse(image.index(slice(i, i + 1)), text.index(slice(j, j + 1))))
            torch.testing.assert_close(scores[i, j], pair[0], atol=1e-5, rtol=1e-5)


def test_scoring_in_chunks_equals_scoring_at_once():
    fusion = make()
    image, text = modalities()
    whole = fusion.score(image, text)
    fusion.pair_chunk = 2
    torch.testing.assert_close(fusion.score(image, text), whole, atol=1e-5, rtol=1e-5)


def test_non_square_scores_and_gradients_reach_every_weight():
    fusion = make().train()
    image, text = modalities()
    scores = fusion.score(image.index(slice(0, 2)), text)
    assert scores.shape == (2, 3)
    scores.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fusion.parameters())


def test_heads_must_divide_dim():
    with pytest.raises(InvalidParams, match="heads=3 does not divide the shared dim 8"):
        GatedFusion(dim=8, heads=3, layers=1, dropout=0.0, ffn_mult=4)
