"""`progressive`: one tower (or both) frozen for the first steps or epochs, then both train,
optionally over another strategy (progressive + lora)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmreg.adapters import encoder_towers
from mmreg.components import Encoder, PeftStrategy
from mmreg.errors import ConfigError

if TYPE_CHECKING:
    from mmreg.registry import Registry


class Progressive(PeftStrategy):
    """Train one modality first, then both: the docs' answer to modality imbalance (also LiT,
    Zhai et al., 2022, which keeps the image tower locked). The switch is a loop callback
    reading only the step number, so a run resumed across it is exact.
    """

    def __init__(
        self, frozen: list[str], frozen_for: int, unit: str, under: str, under_params: dict[str, Any], strategies: Registry
    ) -> None:
        if under == "progressive":
            raise ConfigError("peft.under cannot be 'progressive' itself; use full, lora, peft or freeze")
        self.frozen, self.frozen_for, self.unit, self.under_name = frozen, frozen_for, unit, under
        self.under = strategies.build(under, under_params, strategies=strategies)
        self.held: list[Any] = []
        self.switch = 0

    def apply(self, encoder: Encoder) -> Encoder:
        encoder = self.under.apply(encoder)
        for name, tower in encoder_towers(encoder, self.frozen, "peft.frozen").items():
            weights = [p for p in tower.module(encoder).parameters() if p.requires_grad]
            if not weights:
                raise ConfigError(
                    f"peft.frozen: the {name} tower has no trainable weight under '{self.under_name}', so nothing would "
                    f"unfreeze; set peft.under to full or lora, or leave {name} out of peft.frozen"
                )
            self.held += weights
        return encoder

    def on_train_start(self, total_steps: int, steps_per_epoch: int) -> None:
        self.switch = self.frozen_for * (steps_per_epoch if self.unit == "epochs" else 1)
        if self.switch >= total_steps:
            longest = (total_steps - 1) // (steps_per_epoch if self.unit == "epochs" else 1)
            allowed = f"at most {longest} {self.unit}" if longest >= 1 else "none in epochs; use unit=steps or a longer run"
            length = f"{self.frozen_for} {self.unit}" + (f" ({self.switch} steps)" if self.unit == "epochs" else "")
            raise ConfigError(
                f"peft.frozen_for: {length} is not shorter than the run ({total_steps} steps); allowed: {allowed}"
            )
        self.under.on_train_start(total_steps, steps_per_epoch)

    def on_step_start(self, step: int) -> None:
        train = step >= self.switch
        for weight in self.held:
            weight.requires_grad_(train)
        self.under.on_step_start(step)
