"""`freeze`: frozen towers, so only projections, fusion, head and temperatures train (a linear probe)."""

from __future__ import annotations

from typing import Any

from mmreg.adapters import encoder_towers
from mmreg.components import Encoder, PeftStrategy


class FreezeTowers(PeftStrategy):
    """Linear probing (Radford et al., 2021, CLIP section 3.2): the towers' weights stay as loaded."""

    def __init__(self, towers: list[str], **_context: Any) -> None:
        self.towers = towers

    def apply(self, encoder: Encoder) -> Encoder:
        for tower in encoder_towers(encoder, self.towers, "peft.towers").values():
            tower.module(encoder).requires_grad_(False)
        return encoder
