"""Registers the `classification` task: parameters and help, no torch; classification.py is imported on first build."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mmreg.hookspecs import hookimpl
from mmreg_plugins.tasks.zeroshot_plugin import PromptParams


class ClassificationParams(PromptParams):
    """How the head starts; ``templates`` make the class prompts of a zero-shot head."""

    head_init: Literal["random", "zeroshot"] = Field(
        "random",
        description="random: a new linear head; zeroshot: its rows the normalised embeddings of each class's prompts (task.templates) "
        "times the logit scale, so before any step it predicts as the zeroshot task (WiSE-FT's zero-shot head; needs --fusion none)",
    )


@hookimpl
def mmreg_register_tasks(register):
    register(
        "classification",
        "mmreg_plugins.tasks.classification:Classification",
        params=ClassificationParams,
        help="predict the image's class from the fused pair: accuracy",
    )
