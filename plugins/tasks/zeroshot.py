"""`zeroshot`: classify each image as the class whose prompts it matches best, with no head and
nothing trained for the task (CLIP, Radford et al. 2021, section 3.1.4; CLIP_benchmark's
``zeroshot_classification``). A contrastive loss trains the model; the task only measures it.

Each class's prompts (``task.templates``) are embedded and ensembled as CLIP does: the class is the
normalised mean of its normalised prompt embeddings. How images meet the classes (``task.space``):

- ``fusion`` (the default): the model's own ``fusion.score``, so what the run trains is what is
  measured, with every fusion. A fusion reading pooled vectors scores the images against the
  ensembled class vectors, each rescaled to its prompts' mean length (a cosine ignores the length;
  a learned match head sees vectors of the size it was trained on). A fusion reading token
  sequences has no vector to average: it scores every prompt, and each class's prompt scores are
  averaged (logit ensembling).
- ``encoder``: the cosine of the encoder's own pooled image and text embeddings, in the space it
  shares between them (``Encoder.shared_space``: CLIP's image and text embeddings). This is CLIP's
  zero-shot classifier exactly, whatever ``model.dim`` projects to: a pretrained CLIP before any
  training (``--max-steps 0``).

Metrics as CLIP_benchmark reports them: ``acc1``, ``acc5`` (only with at least 5 classes) and
``mean_per_class_recall`` (top-1 recall averaged over the classes present: sklearn's balanced
accuracy). Ties count against the true class, as recall@K does in ``mmreg.metrics``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmreg.components import Dataset, Encoded, Encoder, Evaluation, Modality, ModelView, Sample, Task
from mmreg.errors import ConfigError, DataError
from mmreg_plugins.tasks.zeroshot_plugin import CLASS, TEMPLATE_SETS

PROMPT_BATCH = 256  # prompts encoded per forward pass
NO_POOLED = "task.space=encoder reads the encoder's own pooled embeddings, which it does not give with this fusion; use task.space=fusion"
Templates = Sequence[str] | Mapping[str, Sequence[str]]


def class_prompts(classes: Sequence[str], templates: Templates) -> tuple[list[str], list[int]]:
    """(prompts, owner): every prompt of every class, and the index of the class each one names.

    A list of templates gives each class every template with ``{c}`` replaced by its name; a
    mapping gives each class its own prompts (``{c}`` filled where present). Raises ConfigError for
    a class the mapping lacks."""
    if isinstance(templates, Mapping):
        missing = [name for name in classes if name not in templates]
        if missing:
            raise ConfigError(
                f"task.templates maps no prompts to class '{missing[0]}' ({len(missing)} of the dataset's {len(classes)} classes "
                f"missing); add every class, or give a list of templates with {CLASS}"
            )
        per_class = [templates[name] for name in classes]
    else:
        per_class = [templates] * len(classes)
    prompts, owner = [], []
    for index, (name, lines) in enumerate(zip(classes, per_class, strict=True)):
        prompts += [line.replace(CLASS, name) for line in lines]
        owner += [index] * len(lines)
    return prompts, owner


def mean_by_class(values: torch.Tensor, owner: torch.Tensor, classes: int) -> torch.Tensor:
    """[C, ...]: the mean of the rows of ``values`` [P, ...] that belong to each class (``owner`` [P],
    class indices); NaN for a class with no row."""
    sums = values.new_zeros((classes, *values.shape[1:])).index_add_(0, owner, values)
    counts = torch.bincount(owner, minlength=classes).to(values.dtype)
    return sums / counts.reshape(-1, *[1] * (values.dim() - 1))


def ensemble(vectors: torch.Tensor, owner: torch.Tensor, classes: int) -> torch.Tensor:
    """CLIP's prompt ensemble: each class [C, D] is the normalised mean of its normalised prompt
    embeddings (``vectors`` [P, D], ``owner`` [P])."""
    return F.normalize(mean_by_class(F.normalize(vectors, dim=-1), owner, classes), dim=-1)


def label_ranks(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[N]: how many other classes score at least as high as each image's own (``scores`` [N, C],
    ``labels`` [N]); 0 is a correct top-1 prediction. Ties count against the true class."""
    own = scores.gather(1, labels.unsqueeze(1))
    return (scores >= own).sum(dim=1) - 1


def metric_names(classes: int) -> tuple[str, ...]:
    """The metrics over ``classes`` classes: top-5 accuracy only where there are 5 to rank."""
    return ("acc1", "acc5", "mean_per_class_recall") if classes >= 5 else ("acc1", "mean_per_class_recall")


def zeroshot_metrics(ranks: torch.Tensor, labels: torch.Tensor, classes: int) -> dict[str, float]:
    """``metric_names(classes)`` from each image's ``label_ranks`` [N] and its label [N]: top-1 and
    top-5 accuracy, and top-1 recall averaged over the classes that have images."""
    hit = (ranks == 0).double()
    metrics = {"acc1": hit.mean().item()}
    if classes >= 5:
        metrics["acc5"] = (ranks < 5).double().mean().item()
    recall = mean_by_class(hit, labels, classes)
    metrics["mean_per_class_recall"] = recall[torch.bincount(labels, minlength=classes) > 0].mean().item()
    return metrics


def encoder_images(pooled: torch.Tensor | None) -> Modality:
    """The encoder's own pooled image embeddings [N, D_enc], as ``task.space=encoder`` scores them."""
    if pooled is None:
        raise ConfigError(NO_POOLED)
    return Modality(pooled=pooled)


class ClassScorer:
    """The classes as images are scored against them, embedded once from the weights as they are."""

    def __init__(self, model: ModelView, classes: Sequence[str], templates: Templates, space: str) -> None:
        prompts, owner = class_prompts(classes, templates)
        self.model, self.classes, self.prompts = model, len(classes), len(prompts)
        self.owner = torch.tensor(owner, device=model.device)
        encode = model.encode_texts if space == "fusion" else model.encoder.encode_texts
        parts = []
        for start in range(0, len(prompts), PROMPT_BATCH):
            tokens = {k: v.to(model.device) for k, v in model.encoder.tokenize(prompts[start : start + PROMPT_BATCH]).items()}
            parts.append(encode(tokens["input_ids"], tokens["attention_mask"]))
        text = Modality.cat(parts)
        self.vectors: torch.Tensor | None = None  # [C, D_enc] where space is encoder
        self.side: Modality | None = None  # the class vectors the fusion scores, where it reads pooled vectors
        self.text: Modality | None = None  # every prompt, where the fusion reads token sequences
        if space == "encoder":
            if text.pooled is None:
                raise ConfigError(NO_POOLED)
            self.vectors = ensemble(text.pooled.float(), self.owner, self.classes)
            self.how = "cosine of the encoder's own embeddings with each class's prompt ensemble"
        elif text.pooled is not None:
            lengths = mean_by_class(text.pooled.norm(dim=-1), self.owner, self.classes)
            self.side = Modality(pooled=ensemble(text.pooled, self.owner, self.classes) * lengths.unsqueeze(1))
            self.how = f"{type(model.fusion).__name__} score against each class's prompt ensemble"
        else:
            self.text = text
            self.how = f"{type(model.fusion).__name__} score of every prompt, averaged per class"

    def __call__(self, image: Modality) -> torch.Tensor:
        """[N, C] scores of N images: the projected image features (space fusion), or ``encoder_images``."""
        if self.vectors is not None:
            return F.normalize(image.pooled.float(), dim=-1) @ self.vectors.T  # type: ignore[union-attr]
        if self.side is not None:
            return self.model.fusion.score(image, self.side)
        return mean_by_class(self.model.fusion.score(image, self.text).T, self.owner, self.classes).T  # type: ignore[arg-type]


class ZeroShotEvaluation(Evaluation):
    """``acc1``, ``acc5``, ``mean_per_class_recall`` of the split's images against the task's classes,
    embedded at the first batch from the weights being evaluated."""

    def __init__(self, task: ZeroShot) -> None:
        self.task = task
        self.names = metric_names(len(task.classes))
        self.scorer: ClassScorer | None = None
        self.ranks: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def update(self, model: ModelView, features: Encoded, batch: dict[str, torch.Tensor]) -> None:
        if self.scorer is None:
            self.scorer = ClassScorer(model, self.task.classes, self.task.templates, self.task.space)
        image = features.image if self.task.space == "fusion" else encoder_images(None if features.pooled is None else features.pooled[0])
        self.ranks.append(label_ranks(self.scorer(image).float(), batch["labels"]).cpu())
        self.labels.append(batch["labels"].cpu())

    def compute(self) -> dict[str, float]:
        ranks, labels = torch.cat(self.ranks), torch.cat(self.labels)
        classes = len(self.task.classes)
        assert self.scorer is not None
        self.task.report = {
            "images": len(labels), "classes": classes, "prompts": self.scorer.prompts, "templates": self.task.template_set,
            "space": self.task.space, "scoring": self.scorer.how, "chance@1": 1 / classes,
        }  # fmt: skip
        return zeroshot_metrics(ranks, labels, classes)


class ZeroShot(Task):
    """Zero-shot classification into the dataset's classes (``Dataset.classes``; each sample's
    ``label`` indexes them) by class prompts: no head, no targets for the losses."""

    needs_fields = frozenset({"image", "label"})
    headline = "acc1"
    metric_names = ("acc1", "acc5", "mean_per_class_recall")  # acc5 only with 5 classes or more
    benchmark = "zeroshot_classification"  # CLIP_benchmark's name for these results (`mmreg eval --output`)

    def __init__(self, *, templates: str | Templates = "openai", space: str = "fusion", settings: Any = None) -> None:
        super().__init__(settings=settings)
        self.templates: Templates = TEMPLATE_SETS[templates] if isinstance(templates, str) else templates
        self.template_set = templates if isinstance(templates, str) else "given per class" if isinstance(templates, Mapping) else "given"
        self.space = space
        self.report: dict[str, Any] = {}

    def build_head(self, width: int, dataset: Dataset, encoder: Encoder) -> nn.Module | None:
        """No head: takes the dataset's classes and checks the templates cover them, before any training."""
        self.classes = list(dataset.classes or [])
        if not self.classes:
            raise DataError("task 'zeroshot' classifies into the dataset's classes, and this dataset names none; choose a dataset with classes")
        class_prompts(self.classes, self.templates)
        return None

    def targets(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        """``labels`` [N]: each image's class index."""
        odd = [s.label for s in samples if s.label is None or not 0 <= s.label < len(self.classes)]
        if odd:
            raise DataError(f"a sample's label is {odd[0]!r}, not one of the dataset's {len(self.classes)} class indices; task 'zeroshot' needs every image labelled")
        return {"labels": torch.tensor([s.label for s in samples], dtype=torch.long)}

    def evaluations(self, model: ModelView) -> list[Evaluation]:
        if model.encoder.single_stream:
            raise ConfigError("task 'zeroshot' embeds class prompts apart from the images, and this encoder is single-stream; use an encoder with separate towers, e.g. --encoder clip")
        if self.space == "encoder" and not model.encoder.shared_space:
            raise ConfigError("task.space=encoder scores in the encoder's own space shared by images and texts, and this encoder has none; use task.space=fusion")
        return [ZeroShotEvaluation(self)]

    def describe(self) -> dict[str, Any]:
        """The last evaluation's images, classes, prompts, how they were scored and the chance level."""
        return dict(self.report)

    def predict(self, model: ModelView, pixels: dict[str, torch.Tensor], texts: Sequence[str], top_k: int) -> list[list[dict[str, Any]]]:
        """The ``top_k`` classes of each image, best first, as ``{"class": name, "score": float}`` (the
        model's score of the image with the class: the fusion's, or the cosine in the encoder's space);
        ``texts``, where given, are the candidate class names instead of the dataset's."""
        classes = list(texts) or self.classes
        scorer = ClassScorer(model, classes, self.templates, self.space)
        pixel_values = pixels["pixel_values"].to(model.device)
        image = model.encode_images(pixel_values) if self.space == "fusion" else encoder_images(model.encoder.encode_images(pixel_values).pooled)
        best = scorer(image).float().topk(min(top_k, len(classes)), dim=-1)
        return [[{"class": classes[j], "score": float(p)} for j, p in zip(idx, val, strict=True)]
                for idx, val in zip(best.indices.tolist(), best.values.tolist(), strict=True)]  # fmt: skip
