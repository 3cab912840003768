"""`full`: full fine-tuning, every encoder weight trains."""

from __future__ import annotations

from typing import Any

from mmreg.components import Encoder, PeftStrategy


class FullFineTuning(PeftStrategy):
    """Leaves the encoder as composed: every weight the model reads trains."""

    def __init__(self, **_context: Any) -> None:
        pass

    def apply(self, encoder: Encoder) -> Encoder:
        return encoder
