"""Choosing and checking the task a run trains for; the tasks themselves are plugins
(``mmreg_register_tasks``, interface ``mmreg.components.Task``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .components import Encoded, Evaluation, Fusion, Modality, Task
from .errors import ConfigError, IncompatibleParts, did_you_mean
from .metrics import AccuracyEvaluation, RetrievalEvaluation

HEAD_INPUTS = frozenset({"logits", "labels", "token_logits"})  # Step fields only a task's head gives


def choose_task(requested: str | None, loss_needs: Iterable[frozenset[str]], tasks: Any) -> str:
    """The task asked for, or the one the losses imply: the registered task declaring itself the
    default for a ``Step`` field a chosen loss reads (``Task.default_for``), a head's field (logits)
    before the fusion's scores. Raises ConfigError where no task claims what the losses read."""
    if requested is not None:
        return requested
    read = frozenset().union(*loss_needs)
    claims = {}
    for entry in tasks:
        try:
            claims[entry.name] = declared_needs(entry, "default_for")
        except Exception:  # a task plugin that cannot be imported claims nothing; naming it reports why
            continue
    for fields in (read & HEAD_INPUTS, read - HEAD_INPUTS):
        chosen = [name for name, field in claims.items() if field in fields]
        if chosen:
            return chosen[0]
    raise ConfigError(f"no task is the default for what the chosen losses read ({', '.join(sorted(read))}); choose one with --task")


def task_class(tasks: Any, name: str) -> Any:
    """The registered task's declared class; an unknown name is a bad ``task`` setting."""
    if name not in tasks:
        raise ConfigError(f"setting 'task': unknown task '{name}'{did_you_mean(name, tasks.names())} (known: {', '.join(tasks.names())}); choose one with --task")
    factory = tasks.get(name).factory
    return getattr(factory, "__self__", factory)


def declared_needs(entry: Any, attribute: str) -> Any:
    """What a registered component's class declares as ``attribute`` (``needs``, ``provides``,
    ``default_for``); an empty set where it declares nothing."""
    factory = entry.factory
    return getattr(getattr(factory, "__self__", factory), attribute, frozenset())


def check_task(
    name: str, task: Any, host: Any, losses: Mapping[str, frozenset[str]], dataset: str, fields: frozenset[str]
) -> None:
    """Refuse a task that the losses or the dataset cannot serve, naming the parts and the way out.

    ``task`` is the task's declared class (``needs_fields``, ``provides``); ``host`` the plugin
    host, to name the tasks or losses that would fit.
    """
    missing = sorted(task.needs_fields - fields)
    if missing:
        raise IncompatibleParts(
            f"task '{name}' needs {', '.join(missing)} but dataset '{dataset}' has none; "
            f"choose a dataset with {missing[0]}s or another --task"
        )
    for loss, needs in losses.items():
        if (needs & HEAD_INPUTS) - task.provides:
            out = sorted(needs & HEAD_INPUTS - {"labels"})[0]
            givers = [e.name for e in host.registry("tasks") if e.name != name and needs & HEAD_INPUTS <= declared_needs(e, "provides")]
            way = " or ".join(f"--task {g}" for g in givers) or "another task"
            has = "has no head" if not task.provides else f"gives no {out}"
            raise IncompatibleParts(f"loss '{loss}' reads head {out} but task '{name}' {has}; use {way}, or a contrastive loss")
    if task.provides and not any(needs & task.provides for needs in losses.values()):
        readers = [
            e.name for e in host.registry("losses")
            if declared_needs(e, "needs") & task.provides and declared_needs(e, "needs") & HEAD_INPUTS <= task.provides
        ]  # fmt: skip
        way = " or ".join(f"--loss {r}" for r in readers) or "a loss reading it"
        output = sorted(task.provides - {"labels"})[0]
        raise IncompatibleParts(f"task '{name}' trains a head but no chosen loss ({', '.join(losses)}) reads its {output}; add {way}")


class FusedHeadTask(Task):
    """A task whose head reads the fusion's joint features ``fuse(image, text)`` [N, D] and
    gives logits [N, C] over classes (classification, VQA): scored by the accuracy of the head's
    argmax, reported under the subclass's ``headline``, by each modality's own accuracy as
    ``HEADLINE/image_only`` and ``HEADLINE/text_only`` where the fusion gives unimodal logits
    (``Fusion.gives_unimodal``), and by recall@K too where a loss also
    trains the fusion's ``score`` (``score_evaluations``). Subclasses name the headline, build
    the head and collate ``labels``."""

    provides = frozenset({"logits", "labels"})
    reads_fused = True

    def forward(self, head: nn.Module, fusion: Fusion, features: Encoded, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": head(fusion.fuse(features.image, features.text))}

    def evaluations(self, model: nn.Module) -> list[Evaluation]:
        if self.headline is None:
            raise ConfigError(f"task '{self.name}' ({type(self).__name__}) names no headline; set headline to the name its accuracy is reported under")
        alone = [Alone(self.headline_evaluation(OneModality(self, m)), m) for m in MODALITIES] if getattr(model, "gives_unimodal", False) else []
        return [self.headline_evaluation(self), *alone, *self.score_evaluations(model)]

    def headline_evaluation(self, task: Task) -> Evaluation:
        """The evaluation giving the headline from ``task.forward``'s logits: ``task`` is this task, or
        this task seen through one modality (``OneModality``). Accuracy of the argmax here."""
        return AccuracyEvaluation(task, self.headline)

    def score_evaluations(self, model: nn.Module) -> list[Evaluation]:
        """Recall@K of the fusion's ``score`` where a chosen loss trains it, else none."""
        memory_mb = getattr(self.settings, "score_memory_mb", 512)
        return [RetrievalEvaluation(model, memory_mb=memory_mb)] if "scores" in model.needs else []

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Scores [N, C] in [0, 1] of the head's logits: a softmax over exclusive classes."""
        return logits.softmax(dim=-1)

    def predict(self, model: nn.Module, pixels: dict[str, torch.Tensor], texts: Sequence[str], top_k: int) -> list[list[dict[str, Any]]]:
        """The ``top_k`` classes (answers) of each image with its text, in the order of their logits,
        as ``{target: class, "score": probability}``; one text serves every image, or one per image."""
        n = next(iter(pixels.values())).shape[0]
        if len(texts) not in (1, n):
            raise ConfigError(f"task '{self.name}' reads one {self.text} per image: give one --text for all {n} images or one per image, not {len(texts)}")
        paired = list(texts) * n if len(texts) == 1 else list(texts)
        batch = {**pixels, **model.encoder.tokenize(paired)}
        batch = {k: v.to(model.device) for k, v in batch.items()}
        logits = self.forward(model.head, model.fusion, model.encode(batch), batch)["logits"]
        top = logits.topk(min(top_k, logits.shape[-1]), dim=-1).indices
        probs = self.probabilities(logits).gather(1, top)
        return [[{self.target or "class": self.classes[k], "score": float(p)} for k, p in zip(row, prow, strict=True)]
                for row, prow in zip(top.tolist(), probs.tolist(), strict=True)]  # fmt: skip



MODALITIES = ("image", "text")


def splits_modalities(fusion: Any, encoder: Any) -> bool:
    """Whether a fusion (class or instance) gives each modality's own logits with this encoder: it declares
    ``Fusion.gives_unimodal`` and the encoder has separate towers (not ``single_stream``)."""
    return bool(getattr(fusion, "gives_unimodal", False)) and not getattr(encoder, "single_stream", False)


def head_over_fusion(task: Any) -> bool:
    """Whether a task (class or instance) has a head over the fusion's ``fuse`` giving logits, which
    unimodal logits are read from."""
    return bool(getattr(task, "reads_fused", False)) and "logits" in getattr(task, "provides", frozenset())


def modality_logits(
    task: Task, head: nn.Module, fusion: Fusion, encoded: Encoded, batch: dict[str, torch.Tensor], modalities: Sequence[str] = MODALITIES
) -> dict[str, torch.Tensor]:
    """Each modality's own logits [N, C] from the head over ``fuse`` with the other modality's pooled
    vectors zeroed: with L(v, t) the head's logits, image L(v, 0) - L(0, 0) / 2, text L(0, t) - L(0, 0) / 2.
    Where L is affine in [v, t] (W_v v + W_t t + b: `none` with a linear head) this is exactly OGM-GE's
    split of the concatenation head, W_v v + b/2 (Peng et al., CVPR 2022, GeWu-Lab/OGM-GE_CVPR2022),
    and the two add up to L(v, t); through a nonlinear fusion (`concat`'s MLP) it is that modality's
    input alone. For fusions declaring ``Fusion.gives_unimodal`` (pooled vectors); one pass for
    L(0, 0) and one per modality in ``modalities``."""
    image, text = encoded.image.pooled, encoded.text.pooled
    assert image is not None and text is not None, "a fusion giving unimodal logits reads pooled vectors"

    def logits(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        fused = Encoded(Modality(pooled=v), Modality(pooled=t), encoded.image_tokens, encoded.pooled)
        return task.forward(head, fusion, fused, batch)["logits"]

    absent = logits(torch.zeros_like(image), torch.zeros_like(text)) / 2
    out = {}
    for modality in modalities:
        v, t = (image, torch.zeros_like(text)) if modality == "image" else (torch.zeros_like(image), text)
        out[modality] = logits(v, t) - absent
    return out


@contextlib.contextmanager
def evaluating(*modules: nn.Module | None) -> Iterator[None]:
    """``modules`` in eval mode (no dropout, so no draw from the random generators), each submodule's
    own mode restored after."""
    modes = [(m, m.training) for module in modules if module is not None for m in module.modules()]
    try:
        for module in modules:
            if module is not None:
                module.eval()
        yield
    finally:
        for m, mode in modes:
            m.training = mode


class OneModality:
    """A task seen through one modality: its ``forward`` gives that modality's own logits
    (``modality_logits``), every other attribute is the task's, so the task's own headline
    evaluation scores the modality alone."""

    def __init__(self, task: Task, modality: str) -> None:
        self.task, self.modality = task, modality

    def forward(self, head: nn.Module, fusion: Fusion, features: Encoded, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": modality_logits(self.task, head, fusion, features, batch, (self.modality,))[self.modality]}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)


class Alone(Evaluation):
    """A headline evaluation run on one modality's own logits, its headline reported as
    ``HEADLINE/image_only`` or ``HEADLINE/text_only`` (breakdowns left out): how far the modality
    gets alone, the other left out (modality imbalance)."""

    def __init__(self, inner: Evaluation, modality: str) -> None:
        self.inner, self.suffix = inner, f"{modality}_only"
        self.names = tuple(f"{n}/{self.suffix}" for n in inner.names)

    def update(self, model: nn.Module, features: Encoded, batch: dict[str, torch.Tensor]) -> None:
        self.inner.update(model, features, batch)

    def compute(self) -> dict[str, float]:
        values = self.inner.compute()
        return {f"{n}/{self.suffix}": values[n] for n in self.inner.names if n in values}
