"""`concat`: an MLP over the concatenated pooled vectors, optionally with their product and difference."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from mmreg.components import Modality, PairwiseFusion
from mmreg.hookspecs import hookimpl
from mmreg.layers import match_head


class ConcatParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(256, ge=1, description="MLP width (unused when layers=1)")
    layers: int = Field(2, ge=1, description="MLP layers; the last maps to the shared dim")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout after each hidden MLP layer")
    interactions: bool = Field(
        True,
        description="also feed v*t and |v-t| (InferSent features) so the MLP can compare the vectors; "
        "false gives the plain [v, t]",
    )


class ConcatFusion(PairwiseFusion):
    """The docs' concatenation fusion: [v, t] (or [v, t, v*t, |v-t|]) -> MLP -> norm.

    An MLP over a bare [v, t] must learn multiplication to tell whether two
    vectors agree; the product and absolute difference hand it that comparison
    directly, which is why ``interactions`` is on by default. ``score`` runs a
    small head over ``fuse`` of every pair.
    """

    needs_tokens = False

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


@hookimpl
def mmreg_register_fusions(register):
    register(
        "concat",
        ConcatFusion,
        params=ConcatParams,
        help="MLP over the pooled vectors [v, t, v*t, |v-t|] (or [v, t]); works with pooled-only encoders",
    )
