"""Registers the `full` PEFT strategy: parameters and help, no torch; full.py is imported on first build."""

from __future__ import annotations

from mmreg.hookspecs import hookimpl


@hookimpl
def mmreg_register_peft_strategies(register):
    register("full", "mmreg_plugins.peft.full:FullFineTuning", help="train every encoder weight")
