"""`retrieval`: match images and captions; no head, scored by recall@K of the fusion's ``score``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mmreg.components import Evaluation, Task
from mmreg.errors import ConfigError
from mmreg.metrics import RetrievalEvaluation


class Retrieval(Task):
    """Image-text retrieval: recall@K in both directions (CLIP's zero-shot retrieval protocol),
    every image against every caption of the split, where a loss trains the fusion's ``score``."""

    def evaluations(self, model: nn.Module) -> list[Evaluation]:
        return [RetrievalEvaluation()] if "scores" in model.needs else []

    def predict(self, model: nn.Module, pixels: dict[str, torch.Tensor], texts: Sequence[str], top_k: int) -> list[list[dict[str, Any]]]:
        """The ``top_k`` best-matching ``texts`` (candidate captions) of each image by the fusion's
        ``score``, as ``{"text": caption, "score": score}``."""
        if not texts:
            raise ConfigError("task 'retrieval' ranks candidate captions: give them with --text")
        batch = {**pixels, **model.encoder.tokenize(list(texts))}
        batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items()}
        image = model.encode_images(batch["pixel_values"])
        text = model.encode_texts(batch["input_ids"], batch["attention_mask"])
        scores = model.fusion.score(image, text)
        best = scores.topk(min(top_k, len(texts)), dim=-1)
        return [[{"text": texts[j], "score": float(v)} for j, v in zip(idx, val, strict=True)]
                for idx, val in zip(best.indices.tolist(), best.values.tolist(), strict=True)]  # fmt: skip
