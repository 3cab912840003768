"""The concat fusion on small hand-checked tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmreg.components import Modality
from mmreg.errors import InvalidParams
from mmreg.plugins import load_plugins
from mmreg_plugins.fusions.concat import ConcatFusion


def make(dim=8, layers=2, interactions=True) -> ConcatFusion:
    torch.manual_seed(0)
    return ConcatFusion(dim=dim, hidden=16, layers=layers, dropout=0.0, interactions=interactions).eval()


def pooled(n=3, dim=8, seed=1) -> Modality:
    return Modality(pooled=torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)))


def hand_pair() -> tuple[Modality, Modality]:
    image = Modality(pooled=torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.5, 0.0, 1.0, 1.0]]))
    text = Modality(pooled=torch.tensor([[3.0, -1.0, 2.0, 1.0], [0.5, 2.0, -1.0, 1.0]]))
    return image, text


def block_sums(fusion: ConcatFusion, blocks: int) -> None:
    """Set the single linear layer so output k is the sum of input block k (of width 4)."""
    linear = fusion.mlp[0]
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        for k in range(blocks):
            linear.weight[k, 4 * k : 4 * k + 4] = 1.0


def test_fuse_by_hand_with_interactions():
    """One layer summing each block of [v, t, v*t, |v-t|], then the norm."""
    fusion = make(dim=4, layers=1)
    assert fusion.mlp[0].in_features == 16
    block_sums(fusion, 4)
    image, text = hand_pair()
    # row 0: sum v = 2, sum t = 5, v*t = [3, -2, 0, -1] -> 0, |v-t| = [2, 3, 2, 2] -> 9
    # row 1: sum v = 2.5, sum t = 2.5, v*t = [0.25, 0, -1, 1] -> 0.25, |v-t| = [0, 2, 2, 0] -> 4
    before_norm = torch.tensor([[2.0, 5.0, 0.0, 9.0], [2.5, 2.5, 0.25, 4.0]])
    expected = nn.functional.layer_norm(before_norm, (4,), fusion.norm.weight, fusion.norm.bias)
    torch.testing.assert_close(fusion.fuse(image, text), expected)
    assert fusion.out_dim == 4


def test_without_interactions_only_v_and_t_are_fed():
    fusion = make(dim=4, layers=1, interactions=False)
    assert fusion.mlp[0].in_features == 8
    block_sums(fusion, 2)
    image, text = hand_pair()
    before_norm = torch.tensor([[2.0, 5.0, 0.0, 0.0], [2.5, 2.5, 0.0, 0.0]])
    expected = nn.functional.layer_norm(before_norm, (4,), fusion.norm.weight, fusion.norm.bias)
    torch.testing.assert_close(fusion.fuse(image, text), expected)


def test_mlp_depth_and_width():
    fusion = ConcatFusion(dim=8, hidden=32, layers=3, dropout=0.1, interactions=True)
    linears = [m for m in fusion.mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 32), (32, 32), (32, 8)]


def test_fuse_only_training_freezes_the_match_head():
    fusion = make()
    fusion.use(score=False, fuse=True)
    assert not any(p.requires_grad for p in fusion.match_head.parameters())
    assert all(p.requires_grad for p in [*fusion.mlp.parameters(), *fusion.norm.parameters()])
    fusion.use(score=True, fuse=True)
    assert all(p.requires_grad for p in fusion.parameters())


def test_built_through_the_registry():
    fusions = load_plugins().registry("fusions")
    fusion = fusions.build("concat", {"hidden": 32}, dim=8)
    assert isinstance(fusion, ConcatFusion) and fusion.out_dim == 8 and not fusion.needs_tokens
    assert fusion.mlp[0].out_features == 32
    assert fusion.score(pooled(2), pooled(3, seed=2)).shape == (2, 3)
    with pytest.raises(InvalidParams, match="parameter 'layers'"):
        fusions.build("concat", {"layers": 0}, dim=8)
