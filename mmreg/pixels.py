"""Images cross the DataLoader worker boundary as uint8 and are normalised on the device.

An encoder whose ``pixel_inputs_uint8`` gives resized, cropped uint8 pixels
([N, 3, H, W], 0-255) lets the workers send a quarter of the bytes of float32
pixels, and leaves the rescaling (1/255), normalisation with the encoder's own
``image_normalization`` (mean, std) and the float conversion to the device,
where they cost next to nothing. The result equals what the encoder's image
processor gives with rescaling and normalisation on (transformers'
``rescale_and_normalize``: ``(x / 255 - mean) / std``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image

    from .components import Encoder


def processor_uint8(processor: Any, images: Sequence[Image.Image], **extra: Any) -> dict[str, torch.Tensor]:
    """A transformers image processor's output with rescaling and normalisation off: its resize,
    crop and padding on uint8 pixels (the torchvision backend of transformers 5 works on uint8
    tensors); ``pixel_values`` uint8 [N, 3, H, W], plus ``pixel_mask`` where the processor pads."""
    out = processor(images=list(images), do_rescale=False, do_normalize=False, return_tensors="pt", **extra)
    batch = {key: out[key] for key in ("pixel_values", "pixel_mask") if key in out}
    batch["pixel_values"] = batch["pixel_values"].round().clamp(0, 255).to(torch.uint8)
    return batch


@functools.lru_cache(maxsize=16)
def _scale(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(255 * mean, 255 * std) as [1, C, 1, 1] float32 on ``device``, made once per device: no
    host-to-device copy in the step."""
    shape = (1, len(mean), 1, 1)
    return (
        torch.tensor([255.0 * m for m in mean], device=device).view(shape),
        torch.tensor([255.0 * s for s in std], device=device).view(shape),
    )


def normalize_uint8(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float32 ``(x / 255 - mean) / std``, computed as
    ``(x - 255 mean) / (255 std)`` (transformers' fused rescale-and-normalise)."""
    shift, scale = _scale(tuple(mean), tuple(std), pixels.device)
    return (pixels.float() - shift) / scale


def normalize_pixels(batch: Mapping[str, torch.Tensor], encoder: Encoder) -> dict[str, torch.Tensor]:
    """The batch with every uint8 ``*pixel_values`` entry rescaled and normalised as the encoder
    expects (``Encoder.image_normalization``), on the device it already sits on; padding marked 0
    by ``pixel_mask`` stays 0, as when a processor normalises before it pads. Float pixels pass
    unchanged. Raises ConfigError for uint8 pixels from an encoder that gives no normalisation."""
    out = dict(batch)
    for key, value in batch.items():
        if not key.endswith("pixel_values") or value.dtype != torch.uint8:
            continue
        norm = encoder.image_normalization()
        if norm is None:
            raise ConfigError(
                f"encoder {type(encoder).__name__} gives uint8 pixels but no image_normalization(); "
                f"return its (mean, std) or give float pixels"
            )
        pixels = normalize_uint8(value, *norm)
        if key == "pixel_values" and "pixel_mask" in batch:
            pixels = pixels * batch["pixel_mask"].unsqueeze(1).to(pixels.dtype)
        out[key] = pixels
    return out


__all__ = ["normalize_pixels", "normalize_uint8", "processor_uint8"]
