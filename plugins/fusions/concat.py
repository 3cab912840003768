"""`concat`: an MLP over the concatenated pooled vectors, optionally with their product and difference."""

from __future__ import annotations

import torch
from torch import nn

from mmreg.components import Modality, PairwiseFusion
from mmreg.layers import match_head


class ConcatFusion(PairwiseFusion):
    """The docs' concatenation fusion: [v, t] (or [v, t, v*t, |v-t|]) -> MLP -> norm.

    An MLP over a bare [v, t] must learn multiplication to tell whether two
    vectors agree; the product and absolute difference hand it that comparison
    directly, which is why ``interactions`` is on by default. ``score`` runs a
    small head over ``fuse`` of every pair.
    """

    needs_tokens = False
    gives_unimodal = True  # one modality's vector zeroed is that modality alone (mmreg.model.MultimodalModel.unimodal_logits)

    def __init__(self, *, dim: int, hidden: int, layers: int, dropout: float, interactions: bool) -> None:
        super().__init__()
        self.out_dim = dim
        self.interactions = interactions
        width = (4 if interactions else 2) * dim
        blocks: list[nn.Module] = []
        for _ in range(layers - 1):
            blocks += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        blocks.append(nn.Linear(width, dim))
        self.mlp = nn.Sequential(*blocks)
        self.norm = nn.LayerNorm(dim)
        self.match_head = match_head(dim)

    def features(self, image: Modality, text: Modality) -> torch.Tensor:
        """The MLP's input: [v, t, v*t, |v-t|], or [v, t] without interactions."""
        assert image.pooled is not None and text.pooled is not None, "concat fusion needs pooled vectors"
        v, t = image.pooled, text.pooled
        parts = [v, t, v * t, (v - t).abs()] if self.interactions else [v, t]
        return torch.cat(parts, dim=-1)

    def fuse(self, image: Modality, text: Modality) -> torch.Tensor:
        return self.norm(self.mlp(self.features(image, text)))
