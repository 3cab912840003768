"""Registers the `classification` task: parameters and help, no torch; classification.py is imported on first build."""

from __future__ import annotations

from mmreg.hookspecs import hookimpl


@hookimpl
def mmreg_register_tasks(register):
    register(
        "classification",
        "mmreg_plugins.tasks.classification:Classification",
        help="predict the image's class from the fused pair: accuracy",
    )
