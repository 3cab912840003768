"""Registers the `gated` fusion: parameters and help, no torch; gated.py is imported on first build."""

from __future__ import annotations

from mmreg.hookspecs import hookimpl
from mmreg.params import AttentionBlockParams


class GatedParams(AttentionBlockParams):
    """``layers`` counts joint self-attention blocks over both token sequences."""


@hookimpl
def mmreg_register_fusions(register):
    register(
        "gated",
        "mmreg_plugins.fusions.gated:GatedFusion",
        params=GatedParams,
        help="joint self-attention over image and text tokens, sigmoid gate mixing the pooled modalities",
    )
