"""Registers the `bce` loss: parameters and help, no torch; bce.py is imported on first build."""

from __future__ import annotations

from mmreg.hookspecs import hookimpl


@hookimpl
def mmreg_register_losses(register):
    register(
        "bce",
        "mmreg_plugins.losses.bce:SoftBinaryCrossEntropy",
        help="binary cross-entropy over answer logits against soft scores (ViLT's VQA loss)",
    )
