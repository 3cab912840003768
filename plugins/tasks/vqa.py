"""`vqa`: answer a question about the image as the field does (VQA v2, ViLT): soft scores over
an answer vocabulary, scored by the official VQA accuracy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mmreg.components import Dataset, Encoded, Encoder, Evaluation, ModelView, Sample, Task
from mmreg.errors import ConfigError, DataError
from mmreg.metrics import retrieval_metric_names
from mmreg.tasks import FusedHeadTask
from mmreg_plugins.tasks._vqa_accuracy import ANSWER_TYPES, accuracy_by_type, answer_accuracy, normalise_answer, soft_score
from mmreg_plugins.tasks.captioning import ConditionedLanguageModel, utf8_rows, utf8_texts

RESULTS_BATCH = 32  # questions answered per forward pass when writing the results file
SEPARATOR = "\x1e"  # joins a question's human answers into one text of the batch (ASCII's record separator)


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


def answer_type_index(sample: Sample) -> int:
    """The index of the sample's answer type in ``ANSWER_TYPES``, -1 for none. Raises DataError for another type."""
    if sample.answer_type is not None and sample.answer_type not in ANSWER_TYPES:
        raise DataError(f"question {sample.question!r}: unknown answer type {sample.answer_type!r}; use one of {', '.join(ANSWER_TYPES)}")
    return ANSWER_TYPES.index(sample.answer_type) if sample.answer_type else -1


def most_common_answer(sample: Sample) -> str:
    """The normalised answer most human answers give (ties: the first given), the text generation is trained to write."""
    humans = [normalise_answer(a) for a in sample.human_answers()]
    if not humans:
        raise DataError(f"question {sample.question!r} has no answers; give each question at least one answer, or leave it out")
    return Counter(humans).most_common(1)[0][0]


class GeneratedVqaEvaluation(Evaluation):
    """The official VQA accuracy (``answer_accuracy``: normalisation, leave-one-out over the human
    answers) of the answers the language model writes after the prompt, overall and per answer type;
    open-ended: any text is an answer, none is outside a vocabulary (BLIP-2, Li et al. 2023)."""

    names = ("vqa_accuracy",)

    def __init__(self, task: VisualQuestionAnswering) -> None:
        self.task, self.scores = task, []

    def update(self, model: nn.Module, features: Encoded, batch: dict[str, torch.Tensor]) -> None:
        written = self.task.write(model.head, features.image_tokens, utf8_texts(batch["question_utf8"]))
        humans = [t.split(SEPARATOR) for t in utf8_texts(batch["answers_utf8"])]
        types = [ANSWER_TYPES[t] if t >= 0 else None for t in batch["answer_types"].tolist()]
        self.scores.extend((answer_accuracy(a, h), kind) for a, h, kind in zip(written, humans, types, strict=True))

    def compute(self) -> dict[str, float]:
        return accuracy_by_type(self.scores)


class VisualQuestionAnswering(FusedHeadTask):
    """The question is fed as text, and answered in one of two forms (``task.answer``).

    Generation (open-ended, BLIP-2): the language model the encoder conditions on the image writes the
    answer after ``task.prompt``; trained on each question's most common human answer (``lm``), scored by
    the official accuracy over every human answer (``GeneratedVqaEvaluation``).

    Classification (ViLT): the head scores every answer of the vocabulary (normalised
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

    # Declared on the class: what either form may give (checked again on the built task, whose form is known)
    provides = frozenset({"logits", "labels", "token_logits"})

    def __init__(
        self, *, min_answer_count: int = 1, answer: str = "auto", prompt: str = "Question: {question} Answer:", num_beams: int = 1,
        max_new_tokens: int = 10, settings: Any = None,
    ) -> None:  # fmt: skip
        super().__init__(settings=settings)
        self.min_answer_count, self.answer, self.prompt = min_answer_count, answer, prompt
        self.num_beams, self.max_new_tokens = num_beams, max_new_tokens
        self.ids: dict[str, int] = {}
        self.conditioned: ConditionedLanguageModel | None = None  # the head, when answers are generated

    def build_head(self, width: int, dataset: Dataset, encoder: Encoder) -> nn.Module:
        """The head of the form ``task.answer`` names ("auto": generation where the encoder conditions a
        language model, else the classifier); the built task then declares only that form's outputs.

        Generation (BLIP-2): the encoder's language model (``ConditionedLanguageModel``) writes the answer
        after ``task.prompt``. Raises ConfigError for generation with an encoder without a language model,
        or a classifier with one that has no fused features.

        The classifier: ViLT's VQA classifier (Kim et al. 2021): widen, normalise, GELU, project onto the answers.

        Where the encoder comes with a fine-tuned answer head (``Encoder.answer_head``: a
        ``ViltForQuestionAnswering`` checkpoint) that head is reused with its answers first, in its
        ``id2label`` order; training answers it lacks extend its last layer with new random rows."""
        conditions = getattr(encoder, "conditions_language_model", False)
        generates = self.answer == "generate" or (self.answer == "auto" and conditions)
        if generates != conditions:
            raise ConfigError(
                "task.answer = 'generate' writes the answer with a language model the encoder conditions on the image, and this encoder has none; "
                "use task.answer = 'classify' or an encoder such as blip2" if generates else
                "task.answer = 'classify' scores an answer vocabulary over fused features, and this encoder conditions a language model "
                "instead; use task.answer = 'generate'"
            )  # fmt: skip
        if generates:
            self.provides, self.reads_fused, self.needs_image_tokens = frozenset({"token_logits"}), False, True
            self.conditioned = ConditionedLanguageModel(encoder)
            return self.conditioned
        self.provides = frozenset({"logits", "labels"})
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

    def prompts(self, questions: Sequence[str]) -> list[str]:
        """``task.prompt`` with each question in place of ``{question}``."""
        return [self.prompt.format(question=q) for q in questions]

    def write(self, head: nn.Module, image: Any, questions: Sequence[str]) -> list[str]:
        """The answers the language model writes to ``questions`` given the image queries."""
        assert isinstance(head, ConditionedLanguageModel)
        return head.write(image, self.prompts(questions), num_beams=self.num_beams, max_new_tokens=self.max_new_tokens)

    def targets(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        """Generation: ``Encoder.language_inputs`` of the prompts and the most common answers, with
        ``question_utf8`` and ``answers_utf8`` (every human answer, ``SEPARATOR``-joined) for evaluation.
        The classifier: see the class."""
        types = torch.tensor([answer_type_index(s) for s in samples], dtype=torch.long)
        if self.conditioned is not None:
            questions = [s.question or "" for s in samples]
            inputs = self.conditioned.encoder.language_inputs(self.prompts(questions), [most_common_answer(s) for s in samples])
            answers = utf8_rows([SEPARATOR.join(s.human_answers()) for s in samples])
            return {**inputs, "question_utf8": utf8_rows(questions), "answers_utf8": answers, "answer_types": types}
        labels = torch.zeros(len(samples), len(self.classes))
        scores = torch.zeros(len(samples), len(self.classes))
        for i, sample in enumerate(samples):
            humans = [normalise_answer(a) for a in sample.human_answers()]
            for answer, matches in Counter(humans).items():
                if answer in self.ids:
                    k = self.ids[answer]
                    labels[i, k] = 1.0 if len(humans) == 1 else soft_score(matches)
                    scores[i, k] = answer_accuracy(answer, humans)
        return {"labels": labels, "answer_scores": scores, "answer_types": types}

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Each answer's own sigmoid score (ViLT's answers are not exclusive: BCE trains them)."""
        return logits.sigmoid()

    def forward(self, head: nn.Module, fusion: Any, features: Encoded, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if isinstance(head, ConditionedLanguageModel):
            return head.logits(features.image_tokens, batch)  # type: ignore[arg-type]
        return super().forward(head, fusion, features, batch)

    def evaluations(self, model: ModelView) -> list[Evaluation]:
        return [GeneratedVqaEvaluation(self)] if self.conditioned is not None else super().evaluations(model)  # type: ignore[arg-type]

    def headline_evaluation(self, task: Task) -> Evaluation:
        return VqaEvaluation(task)

    def predict(self, model: ModelView, pixels: dict[str, torch.Tensor], texts: Sequence[str], top_k: int) -> list[list[dict[str, Any]]]:
        """Generation: the one answer written to each image's question, ``{"answer": text}`` (``top_k``
        not read). The classifier: the ``top_k`` answers with their scores (``FusedHeadTask.predict``)."""
        if self.conditioned is None:
            return super().predict(model, pixels, texts, top_k)  # type: ignore[arg-type]
        n = next(iter(pixels.values())).shape[0]
        if len(texts) not in (1, n):
            raise ConfigError(f"task '{self.name}' reads one question per image: give one --text for all {n} images or one per image, not {len(texts)}")
        image = model.encoder.encode_images(pixels["pixel_values"].to(model.device))
        return [[{"answer": a}] for a in self.write(model.head, image, list(texts) * n if len(texts) == 1 else list(texts))]

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
