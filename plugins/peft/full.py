"""`full`: full fine-tuning, every encoder weight trains."""

from __future__ import annotations

from typing import Any

from mmreg.components import Encoder, PeftStrategy
from mmreg.hookspecs import hookimpl


class FullFineTuning(PeftStrategy):
    """Leaves the encoder as composed: every weight the model reads trains."""

    def __init__(self, **_context: Any) -> None:
        pass

    def apply(self, encoder: Encoder) -> Encoder:
        return encoder


@hookimpl
def mmreg_register_peft_strategies(register):
    register("full", FullFineTuning, help="train every encoder weight")
