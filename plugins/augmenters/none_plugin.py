"""Registers the `none` augmenter: parameters and help, no torch; none.py is imported on first build."""

from __future__ import annotations

from mmreg.hookspecs import hookimpl


@hookimpl
def mmreg_register_augmenters(register):
    register("none", "mmreg_plugins.augmenters.none:NoAugment", help="no augmentation")
