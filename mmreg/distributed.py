"""Data-parallel helpers: gather features and per-column log-sum-exps with their gradients across processes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .modality import Modality

# What `accelerate launch` sets for a sharded-training config (accelerate's parse_flag_from_env reads them)
SHARDED_LAUNCHES = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed", "ACCELERATE_USE_MEGATRON_LM": "Megatron-LM"}


def check_launch(environ: Mapping[str, str]) -> None:
    """Refuse (ConfigError) a launch configured for sharded training (FSDP, DeepSpeed ZeRO, Megatron-LM).

    mmreg trains data-parallel only: every process holds the whole model (DDP), evaluates
    the whole validation split and saves whole safetensors weights; sharded parameters and
    optimizer states would break those, so such a run is refused before anything is built.
    """
    for variable, name in SHARDED_LAUNCHES.items():
        if environ.get(variable, "").strip().lower() in ("1", "true", "yes", "y", "on"):
            raise ConfigError(
                f"this launch is configured for {name} ({variable}), which mmreg does not train with; launch data-parallel "
                f"instead (`accelerate launch --multi_gpu` or torchrun) and save memory with --precision bf16, "
                f"train.gradient_checkpointing or --peft lora"
            )


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums every process's gradient for the global batch and
    hands each process the slice of its own rows, so the loss over the global batch
    trains every process's encoder exactly as one process would (open_clip's gather_with_grad)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rows, ctx.rank = tensor.shape[0], torch.distributed.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        torch.distributed.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def _gather(tensor: torch.Tensor) -> torch.Tensor:
    return _GatherWithGrad.apply(tensor)


def all_rows(tensor: torch.Tensor) -> torch.Tensor:
    """[b, ...] on each process -> [P * b, ...] every process's rows in rank order, with gradients
    (``_GatherWithGrad``) where ``tensor`` has them."""
    return _gather(tensor)


def gather_modality(features: Modality) -> Modality:
    """Every process's features for the global batch, in rank order, with gradients.

    Token sequences are padded to the longest across processes first (captions are
    padded per batch), so the gathered mask still marks the real tokens.
    """
    pooled = None if features.pooled is None else _gather(features.pooled)
    if features.tokens is None:
        return Modality(pooled)
    tokens = features.tokens
    mask = features.mask if features.mask is not None else torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    length = torch.tensor([tokens.shape[1]], device=tokens.device)
    torch.distributed.all_reduce(length, op=torch.distributed.ReduceOp.MAX)
    pad = int(length.item()) - tokens.shape[1]
    tokens = F.pad(tokens, (0, 0, 0, pad))
    mask = F.pad(mask, (0, pad), value=False)
    masks = [torch.empty_like(mask) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(masks, mask)
    return Modality(pooled, _gather(tokens), torch.cat(masks))


def rank_offset(rows: int) -> int:
    """The global index of this process's first sample, when every process holds ``rows``."""
    return torch.distributed.get_rank() * rows


def column_logsumexp(logits: torch.Tensor) -> torch.Tensor:
    """[b, B] this process's rows of a global logit matrix -> [B] the log-sum-exp of each column
    over every process's rows, with gradients to every process's rows; alone, the plain one.

    Each process sends B partial log-sum-exps, not its rows, so a softmax over a column
    (text -> image) costs no pairwise scoring of other processes' images.
    """
    partial = torch.logsumexp(logits, dim=0, keepdim=True)  # [1, B]
    if not is_distributed():
        return partial[0]
    return torch.logsumexp(_gather(partial), dim=0)
