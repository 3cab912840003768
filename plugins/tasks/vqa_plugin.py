"""Registers the `vqa` task: parameters and help, no torch; vqa.py is imported on first build."""

from __future__ import annotations

from mmreg.hookspecs import hookimpl


@hookimpl
def mmreg_register_tasks(register):
    register(
        "vqa",
        "mmreg_plugins.tasks.vqa:VisualQuestionAnswering",
        help="answer a question about the image over the answer vocabulary: VQA accuracy",
    )
