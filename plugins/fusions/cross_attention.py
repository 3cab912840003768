"""`cross-attention`: text tokens attend to image tokens, then the text is pooled and normed."""

from __future__ import annotations

import torch
from torch import nn

from mmreg.components import Modality, PairwiseFusion
from mmreg.errors import InvalidParams
from mmreg.layers import full_mask, masked_mean, match_head


class CrossBlock(nn.Module):
    """Pre-norm cross-attention (text queries, image keys/values) and feed-forward.

    Only the text stream is updated, so every block reads the same image tokens;
    each block norms them itself so its keys and values see a stable scale.
    """

    def __init__(self, dim: int, heads: int, dropout: float, ffn_mult: int) -> None:
        super().__init__()
        self.norm_text = nn.LayerNorm(dim)
        self.norm_image = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim * ffn_mult), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim * ffn_mult, dim)
        )

    def forward(self, text: torch.Tensor, image: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        q, kv = self.norm_text(text), self.norm_image(image)
        text = text + self.attn(q, kv, kv, key_padding_mask=padding, need_weights=False)[0]
        return text + self.ffn(self.norm_ffn(text))


class CrossAttentionFusion(PairwiseFusion):
    """The docs' cross-modal transformer fusion, over token sequences rather than the CLS vector.

    Each text token gathers what it needs from every image token, so a pair is
    judged word by region; ``fuse`` is the norm of the text tokens' masked mean
    and ``score`` runs a small head over ``fuse`` of every pair.
    """

    needs_tokens = True

    def __init__(self, *, dim: int, heads: int, layers: int, dropout: float, ffn_mult: int) -> None:
        super().__init__()
        if dim % heads:
            raise InvalidParams(
                f"fusion 'cross-attention': heads={heads} does not divide the shared dim {dim}; pick heads dividing {dim}"
            )
        self.out_dim = dim
        self.blocks = nn.ModuleList(CrossBlock(dim, heads, dropout, ffn_mult) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.match_head = match_head(dim)

    def fuse(self, image: Modality, text: Modality) -> torch.Tensor:
        assert image.tokens is not None and text.tokens is not None, "cross-attention fusion needs token sequences"
        padding = ~full_mask(image.tokens, image.mask)
        x = text.tokens
        for block in self.blocks:
            x = block(x, image.tokens, padding)
        return self.norm(masked_mean(x, text.mask))
