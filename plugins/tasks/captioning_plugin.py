"""Registers the `captioning` task: parameters and help, no torch; captioning.py is imported on first build."""

from __future__ import annotations

from mmreg.hookspecs import hookimpl


@hookimpl
def mmreg_register_tasks(register):
    register(
        "captioning",
        "mmreg_plugins.tasks.captioning:Captioning",
        help="generate the caption from image tokens (BLIP's decoder): CIDEr-D, BLEU-4",
    )
