"""`vqa`: answer a question about the image as the field does (VQA v2, ViLT): soft scores over
an answer vocabulary, scored by the official VQA accuracy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mmreg.components import Dataset, Encoded, Encoder, Evaluation, ModelView, Sample, Task
from mmreg.errors import DataError
from mmreg.metrics import retrieval_metric_names
from mmreg.tasks import FusedHeadTask
from mmreg_plugins.tasks._vqa_accuracy import ANSWER_TYPES, accuracy_by_type, normalise_answer, soft_score, vqa_accuracy

RESULTS_BATCH = 32  # questions answered per forward pass when writing the results file


def answer_vocabulary(answers: Sequence[Sequence[str]], min_count: int) -> list[str]:
    """The normalised answers given by at least ``min_count`` human answers over all questions,
    most frequent first (ties alphabetical), as ViLT and most VQA v2 models build it.

    Raises DataError for a question without answers, or when no answer is frequent enough.
    """
    counts: Counter[str] = Counter()
    for i, given in enumerate(answers):
        if not given:
            raise DataError(f"training question {i} has no answers; give each question at least one answer, or leave it out")
        counts.update(normalise_answer(a) for a in given)
    vocabulary = sorted((a for a, n in counts.items() if n >= min_count and a), key=lambda a: (-counts[a], a))
    if not vocabulary:
        raise DataError(f"no answer occurs {min_count} or more times in training, so the answer vocabulary is empty; lower task.min_answer_count")
    return vocabulary


class VqaEvaluation(Evaluation):
    """The official VQA accuracy of the head's top answer (``mmreg_plugins.tasks._vqa_accuracy``),
    overall and per answer type: ``batch["answer_scores"]`` [N, C] holds the accuracy each
    vocabulary answer would get."""

    names = ("vqa_accuracy",)

    def __init__(self, task: VisualQuestionAnswering | Any) -> None:
        self.task, self.scores = task, []

    def update(self, model: nn.Module, features: Encoded, batch: dict[str, torch.Tensor]) -> None:
        logits = self.task.forward(model.head, model.fusion, features, batch)["logits"]
        best = batch["answer_scores"].gather(1, logits.argmax(dim=-1, keepdim=True)).squeeze(1)
        types = [ANSWER_TYPES[t] if t >= 0 else None for t in batch["answer_types"].tolist()]
        self.scores.extend(zip(best.tolist(), types, strict=True))

    def compute(self) -> dict[str, float]:
        return accuracy_by_type(self.scores)


class VisualQuestionAnswering(FusedHeadTask):
    """The question is fed as text; the head scores every answer of the vocabulary (normalised
    training answers given ``task.min_answer_count`` times or more).

    ``labels`` [N, C] are ViLT's soft scores, 0/0.3/0.6/0.9/1 for 0/1/2/3/4+ matching human answers
    (a question with a single answer: 1 for it); ``answer_scores`` [N, C] the official accuracy of each
    answer (a single answer: exact match after normalisation, since leave-one-out leaves nothing);
    ``answer_types`` [N] the index of the sample's answer type in ``ANSWER_TYPES``, -1 for none.
    """

    text = "question"
    target = "answer"
    headline = "vqa_accuracy"
    metric_names = ("vqa_accuracy", *retrieval_metric_names())
    needs_fields = frozenset({"image", "question", "answer"})

    def __init__(self, *, min_answer_count: int = 1, settings: Any = None) -> None:
        super().__init__(settings=settings)
        self.min_answer_count = min_answer_count
        self.ids: dict[str, int] = {}

    def build_head(self, width: int, dataset: Dataset, encoder: Encoder) -> nn.Module:
        """ViLT's VQA classifier (Kim et al. 2021): widen, normalise, GELU, project onto the answers.

        Where the encoder comes with a fine-tuned answer head (``Encoder.answer_head``: a
        ``ViltForQuestionAnswering`` checkpoint) that head is reused with its answers first, in its
        ``id2label`` order; training answers it lacks extend its last layer with new random rows."""
        vocabulary = answer_vocabulary(dataset.answers("train"), self.min_answer_count)
        given = encoder.answer_head()
        if given is None:
            self.set_classes(vocabulary)
            return nn.Sequential(nn.Linear(width, 2 * width), nn.LayerNorm(2 * width), nn.GELU(), nn.Linear(2 * width, len(self.classes)))
        head, answers = given
        known = set(answers)
        self.set_classes([*answers, *(a for a in vocabulary if a not in known)])
        last = head[-1]
        if len(self.classes) > last.out_features:
            wider = nn.Linear(last.in_features, len(self.classes))
            with torch.no_grad():
                wider.weight[: last.out_features] = last.weight
                wider.bias[: last.out_features] = last.bias
            head[-1] = wider
        return head

    def set_classes(self, classes: Sequence[str]) -> None:
        self.classes = list(classes)
        self.ids = {answer: i for i, answer in enumerate(self.classes)}

    def targets(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        labels = torch.zeros(len(samples), len(self.classes))
        scores = torch.zeros(len(samples), len(self.classes))
        types = []
        for i, sample in enumerate(samples):
            humans = [normalise_answer(a) for a in sample.human_answers()]
            for answer, matches in Counter(humans).items():
                if answer in self.ids:
                    k = self.ids[answer]
                    labels[i, k] = 1.0 if len(humans) == 1 else soft_score(matches)
                    scores[i, k] = 1.0 if len(humans) == 1 else vqa_accuracy(answer, humans)
            if sample.answer_type is not None and sample.answer_type not in ANSWER_TYPES:
                raise DataError(f"question {sample.question!r}: unknown answer type {sample.answer_type!r}; use one of {', '.join(ANSWER_TYPES)}")
            types.append(ANSWER_TYPES.index(sample.answer_type) if sample.answer_type else -1)
        return {"labels": labels, "answer_scores": scores, "answer_types": torch.tensor(types, dtype=torch.long)}

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Each answer's own sigmoid score (ViLT's answers are not exclusive: BCE trains them)."""
        return logits.sigmoid()

    def headline_evaluation(self, task: Task) -> Evaluation:
        return VqaEvaluation(task)

    def results(self, model: ModelView, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        """The official VQA results format (``mmreg eval --results``): ``[{"question_id": int,
        "answer": str}]``, the top answer of ``predict`` to each question of ``samples``, in order,
        with the sample's ``question_id``, else its index in ``samples``; ``RESULTS_BATCH`` at a time."""
        out: list[dict[str, Any]] = []
        for start in range(0, len(samples), RESULTS_BATCH):
            chunk = samples[start : start + RESULTS_BATCH]
            answers = self.predict(model, model.encoder.pixel_inputs([s.image for s in chunk]), [s.question for s in chunk], 1)
            out += [
                {"question_id": s.question_id if s.question_id is not None else start + i, "answer": best[0]["answer"]}
                for i, (s, best) in enumerate(zip(chunk, answers, strict=True))
            ]
        return out
