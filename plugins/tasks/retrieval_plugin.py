"""Registers the `retrieval` task: parameters and help, no torch; retrieval.py is imported on first build."""

from __future__ import annotations

from mmreg.hookspecs import hookimpl


@hookimpl
def mmreg_register_tasks(register):
    register("retrieval", "mmreg_plugins.tasks.retrieval:Retrieval", help="match images and captions: recall@K (no head)")
