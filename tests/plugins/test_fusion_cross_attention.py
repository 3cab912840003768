"""The cross-attention fusion on small hand-checked tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmreg.components import Modality
from mmreg.errors import InvalidParams
from mmreg.plugins import load_plugins
from mmreg_plugins.fusions.cross_attention import CrossAttentionFusion

TEXT_LENGTHS = (5, 3, 2)
IMAGE_LENGTHS = (4, 2, 3)


def make(dim=8, layers=1) -> CrossAttentionFusion:
    torch.manual_seed(0)
    return CrossAttentionFusion(dim=dim, heads=2, layers=layers, dropout=0.0, ffn_mult=2).eval()


def lengths_mask(lengths, width) -> torch.Tensor:
    mask = torch.zeros(len(lengths), width, dtype=torch.bool)
    for i, length in enumerate(lengths):
        mask[i, :length] = True
    return mask


def modalities(li=4, lt=5, dim=8) -> tuple[Modality, Modality]:
    g = torch.Generator().manual_seed(1)
    image = Modality(tokens=torch.randn(3, li, dim, generator=g), mask=lengths_mask(IMAGE_LENGTHS, li))
    text = Modality(tokens=torch.randn(3, lt, dim, generator=g), mask=lengths_mask(TEXT_LENGTHS, lt))
    return image, text


def test_without_attention_and_ffn_fuse_is_the_normed_text_mean():
    """Zero what each block adds to the text stream: the residuals pass the text through."""
    fusion = make(layers=2)
    with torch.no_grad():
        for block in fusion.blocks:
            block.attn.out_proj.weight.zero_()
            block.attn.out_proj.bias.zero_()
            for p in block.ffn.parameters():
                p.zero_()
    image, text = modalities()
    text_mean = torch.stack([text.tokens[i, :n].mean(0) for i, n in enumerate(TEXT_LENGTHS)])
    expected = nn.functional.layer_norm(text_mean, (8,), fusion.norm.weight, fusion.norm.bias)
    torch.testing.assert_close(fusion.fuse(image, text), expected)


def test_image_padding_never_changes_the_result():
    fusion = make(layers=2)
    image, text = modalities()
    before = fusion.fuse(image, text)
    garbage = image.tokens.clone()
    garbage[~image.mask] = 1e3
    torch.testing.assert_close(fusion.fuse(Modality(tokens=garbage, mask=image.mask), text), before)


def test_text_padding_never_changes_the_result():
    fusion = make(layers=2)
    image, text = modalities()
    before = fusion.fuse(image, text)
    garbage = text.tokens.clone()
    garbage[~text.mask] = 1e3
    torch.testing.assert_close(fusion.fuse(image, Modality(tokens=garbage, mask=text.mask)), before)


def test_the_image_matters():
    fusion = make()
    image, text = modalities()
    before = fusion.fuse(image, text)
    changed = image.tokens.clone()
    changed[1, 0, 0] += 1.0  # one feature of a real token of the second image (a uniform shift would be normed away)
    after = fusion.fuse(Modality(tokens=changed, mask=image.mask), text)
    assert not torch.allclose(after[1], before[1], atol=1e-4)
    torch.testing.assert_close(after[[0, 2]], before[[0, 2]])


def test_heads_must_divide_dim():
    with pytest.raises(InvalidParams, match="heads=3 does not divide the shared dim 8"):
        CrossAttentionFusion(dim=8, heads=3, layers=1, dropout=0.0, ffn_mult=4)


def test_built_through_the_registry():
    fusions = load_plugins().registry("fusions")
    fusion = fusions.build("cross-attention", {"heads": 2}, dim=8)
    assert isinstance(fusion, CrossAttentionFusion) and fusion.out_dim == 8 and fusion.needs_tokens
    image, text = modalities()
    assert fusion.score(image, text).shape == (3, 3)
    with pytest.raises(InvalidParams, match="heads=3 does not divide"):
        fusions.build("cross-attention", {"heads": 3}, dim=8)
