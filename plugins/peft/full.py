"""`full`: full fine-tuning, every encoder weight trains."""

from __future__ import annotations

from mmreg.components import Encoder, PeftStrategy
from mmreg.hookspecs import hookimpl


class FullFineTuning(PeftStrategy):
    def apply(self, encoder: Encoder) -> Encoder:
        encoder.requires_grad_(True)
        return encoder


@hookimpl
def mmreg_register_peft_strategies(register):
    register("full", FullFineTuning, help="train every encoder weight")
