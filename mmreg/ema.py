"""An exponential moving average of a run's weights (``train.ema``), by timm's ``ModelEmaV3``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


def moving_average(model: nn.Module, decay: float | None, warmup: float | None) -> Any | None:
    """timm's ``ModelEmaV3`` of ``model`` (a copy of every weight and buffer, on its device), or
    None where ``decay`` is None. ``update(model, step)`` after each optimizer step: at step 1 the
    copy takes the weights as they are, then w_ema <- decay * w_ema + (1 - decay) * w, with
    ``warmup`` (a power) min(decay, 1 - (1 + step)^-warmup) as timm warms it up (Polyak and
    Juditsky 1992; as timm and open_clip train). Decay 0 follows the weights exactly."""
    if decay is None:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=decay, use_warmup=warmup is not None, warmup_power=warmup if warmup is not None else 2 / 3)
