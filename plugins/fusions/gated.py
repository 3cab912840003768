"""`gated`: joint self-attention over both token sequences, then a sigmoid gate mixing them."""

from __future__ import annotations

import torch
from torch import nn

from mmreg.components import Modality, PairwiseFusion
from mmreg.errors import InvalidParams
from mmreg.layers import full_mask, masked_mean, match_head


class JointBlock(nn.Module):
    """Pre-norm self-attention and feed-forward over the concatenated sequence."""

    def __init__(self, dim: int, heads: int, dropout: float, ffn_mult: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim * ffn_mult), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim * ffn_mult, dim)
        )

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, key_padding_mask=padding, need_weights=False)[0]
        return x + self.ffn(self.norm2(x))


class GatedFusion(PairwiseFusion):
    """The docs' advanced fusion module: joint attention, feed-forward, sigmoid gate, norm.

    ``fuse`` gives gate * vision + (1 - gate) * text after the two sequences have
    attended to each other; ``score`` runs a small head over ``fuse`` of every pair.
    """

    needs_tokens = True

    def __init__(self, *, dim: int, heads: int, layers: int, dropout: float, ffn_mult: int) -> None:
        super().__init__()
        if dim % heads:
            raise InvalidParams(f"fusion 'gated': heads={heads} does not divide the shared dim {dim}; pick heads dividing {dim}")
        self.out_dim = dim
        self.blocks = nn.ModuleList(JointBlock(dim, heads, dropout, ffn_mult) for _ in range(layers))
        self.gate = nn.Sequential(nn.Linear(2 * dim, dim), nn.Sigmoid())
        self.norm = nn.LayerNorm(dim)
        self.match_head = match_head(dim)

    def fuse(self, image: Modality, text: Modality) -> torch.Tensor:
        assert image.tokens is not None and text.tokens is not None, "gated fusion needs token sequences"
        n_image = image.tokens.shape[1]
        x = torch.cat([image.tokens, text.tokens], dim=1)
        image_mask, text_mask = full_mask(image.tokens, image.mask), full_mask(text.tokens, text.mask)
        padding = ~torch.cat([image_mask, text_mask], dim=1)
        for block in self.blocks:
            x = block(x, padding)
        vision = masked_mean(x[:, :n_image], image_mask)
        language = masked_mean(x[:, n_image:], text_mask)
        gate = self.gate(torch.cat([vision, language], dim=-1))
        return self.norm(gate * vision + (1 - gate) * language)
