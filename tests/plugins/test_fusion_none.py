"""The dual-encoder fusion: cosine similarity."""

from __future__ import annotations

import torch

from mmreg.components import Modality
from mmreg_plugins.fusions.none import NoFusion


def test_scores_are_cosine_similarities():
    fusion = NoFusion(dim=2)
    image = Modality(pooled=torch.tensor([[3.0, 0.0], [1.0, 1.0]]))
    text = Modality(pooled=torch.tensor([[2.0, 0.0], [0.0, 5.0], [-1.0, 0.0]]))
    h = 2**-0.5
    torch.testing.assert_close(fusion.score(image, text), torch.tensor([[1.0, 0.0, -1.0], [h, h, -h]]))


def test_fuse_concatenates_unit_vectors():
    fusion = NoFusion(dim=2)
    out = fusion.fuse(Modality(pooled=torch.tensor([[3.0, 4.0]])), Modality(pooled=torch.tensor([[0.0, 2.0]])))
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.8, 0.0, 1.0]]))
    assert fusion.out_dim == 4
