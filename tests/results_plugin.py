"""Third-party components for tests/test_results.py, loaded with --plugin: a task whose headline is
better lower and whose describe() is not retrieval's, a loss that breaks the scalar contract, and a
task whose targets break the one-row-per-sample contract."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from mmreg import hookimpl
from mmreg.components import Evaluation, Loss, Task

# The values the lower-is-better evaluation reports, one per evaluation in order: the best (lowest)
# comes second, the highest third, so a "higher wins" rule would keep another step.
SCHEDULE = (0.5, 0.2, 0.7, 0.3)


class Scheduled(Evaluation):
    """``error`` from SCHEDULE by evaluation count (per task instance), ``hits`` better higher."""

    names = ("error", "hits")

    def __init__(self, task: "Lowest") -> None:
        self.task = task

    def update(self, model, features, batch) -> None:  # noqa: ANN001 - the ModelView protocol
        pass

    def compute(self) -> dict[str, float]:
        value = SCHEDULE[max(0, min(self.task.computed, len(SCHEDULE) - 1))]
        self.task.computed += 1
        return {"error": value, "hits": 1 - value}


class LowestParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field("x", description="echoed in describe()")


class Lowest(Task):
    headline = "error"
    lower_is_better = frozenset({"error"})

    def __init__(self, *, label: str = "x", settings: Any = None) -> None:
        super().__init__(settings=settings)
        self.label, self.computed = label, -1  # the run's first-batch check computes once before training

    def evaluations(self, model) -> list[Evaluation]:  # noqa: ANN001
        return [Scheduled(self)]

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "classes": ["a", "b"], "evaluations": self.computed, "nested": {"ok": [1, 2.5, None]}}


class BadTargets(Lowest):
    """One target row too many: the contract says one row per sample."""

    def targets(self, samples) -> dict[str, torch.Tensor]:  # noqa: ANN001
        return {"labels": torch.zeros(len(samples) + 1, dtype=torch.long)}


class VectorLoss(Loss):
    """Per-row cross-entropy, never reduced: the contract says one number."""

    needs = frozenset({"scores"})

    def forward(self, step) -> torch.Tensor:  # noqa: ANN001
        return torch.nn.functional.cross_entropy(step.scores, torch.arange(len(step.scores)), reduction="none")


@hookimpl
def mmreg_register_tasks(register):
    register("lowest", Lowest, params=LowestParams, help="a test task: error (better lower) from a schedule")
    register("bad-targets", BadTargets, help="a test task whose targets have a row too many")


@hookimpl
def mmreg_register_losses(register):
    register("vector", VectorLoss, help="a test loss that returns a vector")
