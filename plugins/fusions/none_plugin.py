"""Registers the `none` fusion: parameters and help, no torch; none.py is imported on first build."""

from __future__ import annotations

from mmreg.hookspecs import hookimpl


@hookimpl
def mmreg_register_fusions(register):
    register("none", "mmreg_plugins.fusions.none:NoFusion", help="dual encoder: cosine similarity of pooled vectors (CLIP)")
