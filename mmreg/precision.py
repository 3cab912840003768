"""Which training precisions a device can run, checked before anything is built, and which one a run used."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse (ConfigError) a precision ``device`` cannot train in.

    accelerate runs fp16 autocast only on accelerators: on a CPU it trains in
    fp32 without a word. bf16 on CUDA needs a GPU that supports it (Ampere on).
    """
    import torch

    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("--precision fp16 cannot run on the CPU (it would train in fp32); use --precision bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"--precision bf16 is not supported by {torch.cuda.get_device_name(device)}; use --precision fp16 or fp32")


def used_precision(accelerator: Accelerator) -> str:
    """The precision the accelerator actually trains in: fp32 unless it runs native autocast."""
    return accelerator.mixed_precision if accelerator.native_amp else "fp32"
