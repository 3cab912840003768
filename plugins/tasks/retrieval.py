"""`retrieval`: match images and captions; no head, scored by recall@K of the fusion's ``score``
(several captions per image: a caption of the image counts as a match, see mmreg.metrics)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from mmreg.components import Evaluation, ModelView, Sample, Task
from mmreg.errors import ConfigError
from mmreg.metrics import RetrievalEvaluation, adds_cosine, image_groups, protocol_text, retrieval_metric_names


class Retrieval(Task):
    """Image-text retrieval: recall@K in both directions (CLIP's zero-shot retrieval protocol),
    every distinct image against every caption of the split, where a loss trains the fusion's
    ``score``; scored in memory-bounded blocks or over ``eval.shortlist`` candidates."""

    headline = "recall@1"  # the mean of both directions, as retrieval papers report it
    metric_names = tuple(retrieval_metric_names())
    default_for = "scores"  # a run whose losses read only the fusion's scores, with no --task, retrieves

    def __init__(self, *, shortlist: int | str | None = None, rescore: str | None = None, settings: Any = None) -> None:
        super().__init__(settings=settings)
        self.shortlist, self.rescore = shortlist, rescore
        self.evaluation: RetrievalEvaluation | None = None

    def evaluations(self, model: ModelView) -> list[Evaluation]:
        if not {"scores", "pairs"} & model.needs:
            return []
        memory_mb = getattr(self.settings, "score_memory_mb", 512)
        self.evaluation = RetrievalEvaluation(model, memory_mb=memory_mb, shortlist=self.shortlist, rescore=self.rescore)
        return [self.evaluation]

    def targets(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        """``image_group`` [N] where samples carry an ``image_id``: captions of one image share it."""
        return image_groups(samples)

    def describe(self) -> dict[str, Any]:
        """The last evaluation's protocol and scoring (``RetrievalEvaluation.report``) and its
        chance level: recall@1 of a random ranking, one over the distinct images."""
        if self.evaluation is None or not self.evaluation.report:
            return {}
        report = dict(self.evaluation.report)
        return {**report, "protocol": protocol_text(report), "chance@1": 1 / report["images"]}

    def predict(self, model: ModelView, pixels: dict[str, torch.Tensor], texts: Sequence[str], top_k: int) -> list[list[dict[str, Any]]]:
        """The ``top_k`` best-matching ``texts`` (candidate captions) of each image by the fusion's
        ``score``, as ``{"text": caption, "score": score}``."""
        if not texts:
            raise ConfigError("task 'retrieval' ranks candidate captions: give them with --text")
        batch = {**pixels, **model.encoder.tokenize(list(texts))}
        batch = {k: v.to(model.device) for k, v in batch.items()}
        features = model.encode(batch)  # the N images and the M texts, each on its own
        scores = model.fusion.score(features.image, features.text)
        if adds_cosine(model, self.rescore):  # as evaluation ranks them
            image_vectors, text_vectors = (F.normalize(v.float(), dim=-1) for v in features.pooled)  # type: ignore[union-attr]
            scores = scores.float() + image_vectors @ text_vectors.T
        best = scores.topk(min(top_k, len(texts)), dim=-1)
        return [[{"text": texts[j], "score": float(v)} for j, v in zip(idx, val, strict=True)]
                for idx, val in zip(best.indices.tolist(), best.values.tolist(), strict=True)]  # fmt: skip
