"""`none`: no fusion, a dual encoder scored by cosine similarity as CLIP does."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmreg.components import Fusion, Modality


class NoFusion(Fusion):
    """Scores pairs by cosine similarity of pooled vectors; fuses by concatenating them.

    The contrastive loss's temperature scales the cosine into logits, as CLIP's
    logit scale does.
    """

    needs_tokens = False
    gives_unimodal = True  # [v, t]: a linear head over it splits exactly into W_v v + W_t t + b (OGM-GE's split)

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.out_dim = 2 * dim
        self.image_width = dim  # fuse() begins with the normalised image embedding (a zero-shot head reads it)

    def score(self, image: Modality, text: Modality) -> torch.Tensor:
        return F.normalize(image.pooled, dim=-1) @ F.normalize(text.pooled, dim=-1).T

    def fuse(self, image: Modality, text: Modality) -> torch.Tensor:
        return torch.cat([F.normalize(image.pooled, dim=-1), F.normalize(text.pooled, dim=-1)], dim=-1)
