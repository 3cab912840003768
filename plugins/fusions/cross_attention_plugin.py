"""Registers the `cross-attention` fusion: parameters and help, no torch; cross_attention.py is imported on first build."""

from __future__ import annotations

from mmreg.hookspecs import hookimpl
from mmreg.params import AttentionBlockParams


class CrossAttentionParams(AttentionBlockParams):
    """``layers`` counts cross-attention blocks, text attending to image tokens."""


@hookimpl
def mmreg_register_fusions(register):
    register(
        "cross-attention",
        "mmreg_plugins.fusions.cross_attention:CrossAttentionFusion",
        params=CrossAttentionParams,
        help="text tokens cross-attend to image tokens, masked mean of the text, norm",
    )
