"""Deterministic kernels for a run: the same config on the same machine gives the same bits.

On the CPU the one source of run-to-run difference found in mmreg's models is the
backward of advanced indexing (``index_put_`` with accumulation, used where a text
model picks its end-of-text token and by embedding lookups), which adds in a
thread-dependent order; ``torch.use_deterministic_algorithms`` switches it to a
sorted, fixed-order kernel. On CUDA the same switch plus a fixed cuBLAS workspace
(``CUBLAS_WORKSPACE_CONFIG``) and cuDNN without autotuning. See PyTorch's
"Reproducibility" notes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .errors import ConfigError

CUBLAS_WORKSPACE = ":4096:8"


@contextmanager
def deterministic_kernels(enabled: bool) -> Iterator[None]:
    """Within the block, only deterministic kernels run (when ``enabled``); the previous
    process-wide settings are restored after it.

    Raises ConfigError when an operation has no deterministic kernel on this device
    (set ``train.deterministic = false`` to run it anyway).
    """
    if not enabled:
        yield
        return
    cudnn = torch.backends.cudnn
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn_before = (cudnn.deterministic, cudnn.benchmark)
    fill_before = torch.utils.deterministic.fill_uninitialized_memory
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)  # read when cuBLAS starts its handle
    torch.use_deterministic_algorithms(True)
    # A debugging aid that comes with the switch: it NaN-fills every torch.empty (15% of a CPU step
    # here) and changes no result of a correct kernel.
    torch.utils.deterministic.fill_uninitialized_memory = False
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    except RuntimeError as exc:
        if "does not have a deterministic implementation" in str(exc) or "CUBLAS_WORKSPACE_CONFIG" in str(exc):
            first = str(exc).strip().splitlines()[0]
            raise ConfigError(f"{first.rstrip('.')}; set train.deterministic=false to run without that guarantee") from exc
        raise
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.utils.deterministic.fill_uninitialized_memory = fill_before
        cudnn.deterministic, cudnn.benchmark = cudnn_before
