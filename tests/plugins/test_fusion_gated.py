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


def test_heads_must_divide_dim():
    with pytest.raises(InvalidParams, match="heads=3 does not divide the shared dim 8"):
        GatedFusion(dim=8, heads=3, layers=1, dropout=0.0, ffn_mult=4)
