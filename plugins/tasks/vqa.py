"""`vqa`: answer a question about the image, as classification over the training answers (ViLT)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmreg.components import Dataset, Encoder, Sample
from mmreg.data import IGNORE
from mmreg.hookspecs import hookimpl
from mmreg.tasks import FusedHeadTask


class VisualQuestionAnswering(FusedHeadTask):
    """The question is fed as text; the head scores every answer seen in training (an answer
    only in validation gets -100: never right, never trained on). Scored by accuracy."""

    text = "question"
    target = "answer"
    needs_fields = frozenset({"image", "question", "answer"})

    def build_head(self, width: int, dataset: Dataset, encoder: Encoder) -> nn.Module:
        """ViLT's VQA classifier (Kim et al. 2021): widen, normalise, GELU, project onto the answers."""
        self.classes = sorted(set(dataset.texts("train", "answer")))
        self.ids = {answer: i for i, answer in enumerate(self.classes)}
        return nn.Sequential(nn.Linear(width, 2 * width), nn.LayerNorm(2 * width), nn.GELU(), nn.Linear(2 * width, len(self.classes)))

    def targets(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        return {"labels": torch.tensor([self.ids.get(s.answer, IGNORE) for s in samples], dtype=torch.long)}


@hookimpl
def mmreg_register_tasks(register):
    register("vqa", VisualQuestionAnswering, help="answer a question about the image, over the training answers: accuracy")
