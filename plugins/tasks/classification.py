"""`classification`: a linear head over the fused pair predicts the image's class label."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmreg.components import Dataset, Encoder, Sample
from mmreg.metrics import retrieval_metric_names
from mmreg.tasks import FusedHeadTask


class Classification(FusedHeadTask):
    """Logits [N, C] over the dataset's classes from ``fusion.fuse(image, caption)``; scored by
    accuracy, and by recall@K too where a loss also trains the fusion's ``score``."""

    target = "label"
    needs_fields = frozenset({"image", "caption", "label"})
    headline = "accuracy"
    metric_names = ("accuracy", *retrieval_metric_names())  # recall@K where a loss also trains the fusion's score
    default_for = "logits"  # a run whose loss reads head logits, with no --task, classifies

    def build_head(self, width: int, dataset: Dataset, encoder: Encoder) -> nn.Module:
        self.classes = list(dataset.classes or [])
        return nn.Linear(width, len(self.classes))

    def targets(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        return {"labels": torch.tensor([s.label for s in samples], dtype=torch.long)}
