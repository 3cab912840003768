"""`retrieval`: match images and captions; no head, scored by recall@K of the fusion's ``score``."""

from __future__ import annotations

from torch import nn

from mmreg.components import Evaluation, Task
from mmreg.hookspecs import hookimpl
from mmreg.metrics import RetrievalEvaluation


class Retrieval(Task):
    """Image-text retrieval: recall@K in both directions (CLIP's zero-shot retrieval protocol),
    every image against every caption of the split, where a loss trains the fusion's ``score``."""

    def evaluations(self, model: nn.Module) -> list[Evaluation]:
        return [RetrievalEvaluation()] if "scores" in model.needs else []


@hookimpl
def mmreg_register_tasks(register):
    register("retrieval", Retrieval, help="match images and captions: recall@K (no head)")
