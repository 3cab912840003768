"""The tasks a run trains for: what text it reads, what it predicts, how it is scored."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from torch import nn

from .errors import IncompatibleParts

TaskName = Literal["retrieval", "classification", "vqa"]


@dataclass(frozen=True)
class Task:
    """``text`` is the sample field fed as text; ``target`` the field predicted (None: none)."""

    name: TaskName
    text: str
    target: str | None
    needs_fields: frozenset[str]

    @property
    def has_head(self) -> bool:
        return self.target is not None


TASKS: dict[str, Task] = {
    "retrieval": Task("retrieval", "caption", None, frozenset({"image", "caption"})),
    "classification": Task("classification", "caption", "label", frozenset({"image", "caption", "label"})),
    "vqa": Task("vqa", "question", "answer", frozenset({"image", "question", "answer"})),
}


def choose_task(requested: str | None, loss_needs: Iterable[frozenset[str]]) -> Task:
    """The task asked for, or the one the losses imply: logits mean classification, else retrieval."""
    if requested is not None:
        return TASKS[requested]
    return TASKS["classification" if any("logits" in needs for needs in loss_needs) else "retrieval"]


def check_task(task: Task, losses: dict[str, frozenset[str]], dataset: str, fields: frozenset[str]) -> None:
    """Refuse a task that the losses or the dataset cannot serve, naming the parts and the way out."""
    missing = sorted(task.needs_fields - fields)
    if missing:
        raise IncompatibleParts(
            f"task '{task.name}' needs {', '.join(missing)} but dataset '{dataset}' has none; "
            f"choose a dataset with {missing[0]}s or another --task"
        )
    reads_logits = [name for name, needs in losses.items() if "logits" in needs]
    if task.has_head and not reads_logits:
        raise IncompatibleParts(
            f"task '{task.name}' trains a head but no chosen loss ({', '.join(losses)}) reads its logits; add --loss ce"
        )
    if not task.has_head and reads_logits:
        raise IncompatibleParts(
            f"loss '{reads_logits[0]}' reads head logits but task 'retrieval' has no head; "
            f"use --task classification or vqa, or a contrastive loss"
        )


def classification_head(width: int, classes: int) -> nn.Module:
    return nn.Linear(width, classes)


def vqa_head(width: int, answers: int) -> nn.Module:
    """ViLT's VQA classifier: widen, normalise, GELU, project onto the answer vocabulary."""
    return nn.Sequential(nn.Linear(width, 2 * width), nn.LayerNorm(2 * width), nn.GELU(), nn.Linear(2 * width, answers))


def make_head(task: Task, width: int, classes: Sequence[str]) -> nn.Module | None:
    if task.name == "classification":
        return classification_head(width, len(classes))
    if task.name == "vqa":
        return vqa_head(width, len(classes))
    return None
