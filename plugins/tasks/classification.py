"""`classification`: a linear head over the fused pair predicts the image's class label."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmreg.components import Dataset, Encoder, ModelView, Sample
from mmreg.errors import ConfigError
from mmreg.metrics import retrieval_metric_names
from mmreg.tasks import FusedHeadTask
from mmreg_plugins.tasks.zeroshot import ClassScorer, Templates
from mmreg_plugins.tasks.zeroshot_plugin import TEMPLATE_SETS

CLIP_INITIAL_SCALE = 1 / 0.07  # CLIP's logit scale as it starts training, where the encoder has none of its own


class Classification(FusedHeadTask):
    """Logits [N, C] over the dataset's classes from ``fusion.fuse(image, caption)``; scored by
    accuracy, and by recall@K too where a loss also trains the fusion's ``score``."""

    target = "label"
    needs_fields = frozenset({"image", "caption", "label"})
    headline = "accuracy"
    metric_names = ("accuracy", *retrieval_metric_names())  # recall@K where a loss also trains the fusion's score
    default_for = "logits"  # a run whose loss reads head logits, with no --task, classifies

    def __init__(self, *, head_init: str = "random", templates: str | Templates = "openai", settings: Any = None) -> None:
        super().__init__(settings=settings)
        self.head_init = head_init
        self.templates: Templates = TEMPLATE_SETS[templates] if isinstance(templates, str) else templates

    def initialise(self, model: ModelView) -> None:
        """With ``head_init="zeroshot"`` (WiSE-FT's zero-shot head, Wortsman et al. 2022): each class's
        row is the normalised prompt ensemble of its class (``ClassScorer``, as the ``zeroshot`` task
        embeds it) times the logit scale (the encoder's, else CLIP's initial 1/0.07) over the image
        part of the fused features, zero over the rest, bias 0; so before any step the head predicts
        as ``zeroshot`` does. Raises ConfigError for a fusion whose fused features do not begin with
        the normalised image embedding (``Fusion.image_width``)."""
        if self.head_init != "zeroshot":
            return
        width = getattr(model.fusion, "image_width", None)
        if width is None:
            raise ConfigError(
                f"task.head_init=zeroshot sets the head from class prompts, which needs fused features that begin with the "
                f"normalised image embedding; fusion '{type(model.fusion).__name__}' mixes them: use --fusion none, or head_init=random"
            )
        side = ClassScorer(model, self.classes, self.templates, "fusion").side
        encoder_scale = getattr(model.encoder, "logit_scale", None) if getattr(model.encoder, "gives_logit_scale", False) else None
        scale = float(encoder_scale.exp()) if encoder_scale is not None else CLIP_INITIAL_SCALE
        head = model.head
        head.weight.zero_()
        head.weight[:, :width] = scale * F.normalize(side.pooled.float(), dim=-1)  # type: ignore[union-attr]
        head.bias.zero_()

    def build_head(self, width: int, dataset: Dataset, encoder: Encoder) -> nn.Module:
        self.classes = list(dataset.classes or [])
        return nn.Linear(width, len(self.classes))

    def targets(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        return {"labels": torch.tensor([s.label for s in samples], dtype=torch.long)}
