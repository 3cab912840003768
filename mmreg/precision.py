"""Which training precisions a device can run, checked before anything is built, which one ``auto``
stands for on this device, the TF32 matmul setting, and which precision a run used."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

AMPERE = (8, 0)  # the first CUDA architecture with native bf16 and TF32 tensor cores


def auto_precision(device_type: str, capability: tuple[int, int] | None = None) -> str:
    """What ``--precision auto`` trains in: bf16 autocast on CUDA GPUs of compute capability 8.0
    (Ampere) and newer, fp16 autocast with loss scaling on older CUDA GPUs, fp32 elsewhere (CPU, MPS).

    ``capability`` is ``torch.cuda.get_device_capability()`` (major, minor); a pure function,
    so each branch is tested without the GPU. bf16 keeps fp32's exponent range, so it needs
    no loss scaling (Kalamkar et al., 2019); fp16 does (Micikevicius et al., 2018).
    """
    if device_type != "cuda":
        return "fp32"
    return "bf16" if capability is not None and tuple(capability) >= AMPERE else "fp16"


def cuda_capability(device: torch.device) -> tuple[int, int] | None:
    """The CUDA compute capability (major, minor) of ``device``; None off CUDA."""
    import torch

    return torch.cuda.get_device_capability(device) if device.type == "cuda" else None


def resolve_precision(precision: str, device: torch.device) -> str:
    """The concrete precision (fp32, fp16 or bf16) a run on ``device`` trains in; ``auto`` resolved
    by ``auto_precision``, anything else checked by ``check_precision`` and returned as it is.

    Raises ConfigError for a precision the device cannot train in.
    """
    if precision == "auto":
        return auto_precision(device.type, cuda_capability(device))
    check_precision(precision, device)
    return precision


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


def tf32_applies(device_type: str, capability: tuple[int, int] | None, enabled: bool) -> bool:
    """Whether fp32 matmuls and convolutions run on TF32 tensor cores: asked for (``train.tf32``)
    on a CUDA GPU of compute capability 8.0 (Ampere) or newer, where they exist."""
    return enabled and device_type == "cuda" and capability is not None and tuple(capability) >= AMPERE


@contextmanager
def tf32_matmuls(enabled: bool) -> Iterator[None]:
    """Within the block, fp32 matmuls (``torch.set_float32_matmul_precision("high")``) and cuDNN
    convolutions (``torch.backends.cudnn.allow_tf32``) may run in TF32 (when ``enabled``: see
    ``tf32_applies``); the previous process-wide settings are restored after it, as
    ``mmreg.determinism.deterministic_kernels`` restores its own.

    TF32 rounds the inputs of a matmul to a 10-bit mantissa and accumulates in fp32 (NVIDIA,
    "TensorFloat-32 in the A100 GPU"); the kernels stay deterministic, so a deterministic run
    stays bit-reproducible on the same GPU, in TF32 numbers. Under bf16 or fp16 autocast only the
    matmuls autocast leaves in fp32 are affected.
    """
    import torch

    if not enabled:
        yield
        return
    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def used_precision(accelerator: Accelerator) -> str:
    """The precision the accelerator actually trains in: fp32 unless it runs native autocast."""
    return accelerator.mixed_precision if accelerator.native_amp else "fp32"
