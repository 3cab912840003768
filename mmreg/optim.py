"""The optimizer (AdamW, or SGD with momentum) and its parameter groups: a learning rate per part of the model (vision, text, bridge, fusion, head),
layer-wise decay inside each tower, and no weight decay on norms, biases, embeddings and temperatures."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import torch

from .config import OptimConfig, TrainConfig
from .errors import ConfigError
from .model import MultimodalModel

TOWERS = ("vision", "text", "bridge")  # the tower names the core knows: bridge is what links image to language model (a Q-Former)
GROUPS = ("fusion", "head", *TOWERS)  # fusion first: its rate is the one the loop logs as "lr"
LAYER = re.compile(r"(?:^|\.)(?:layers?|blocks|resblocks|h)\.(\d+)\.")
NO_DECAY_NAMES = ("bias", "norm", "embed", "logit_scale", "temperature", "cls_token", "pos_embed")


def excluded_from_decay(name: str, param: torch.Tensor) -> bool:
    """Norms, biases, embeddings and temperatures (anything under 2-D, or named so): as open_clip
    (``training/main.py``: ``p.ndim < 2 or "bn"/"ln"/"bias"/"logit_scale" in name``) plus embeddings."""
    return param.ndim < 2 or any(word in name.lower() for word in NO_DECAY_NAMES)


def layer_ids(named: list[tuple[str, torch.Tensor]]) -> tuple[list[int], int]:
    """The depth of each weight in a tower: 0 before the first numbered layer (embeddings),
    k + 1 in layer k, L + 1 after the last (final norm). Returns (ids, L + 1)."""
    ids: list[int | None] = []
    seen_layer = False
    for name, _ in named:
        match = LAYER.search(name)
        if match:
            seen_layer = True
            ids.append(int(match.group(1)) + 1)
        else:
            ids.append(None if seen_layer else 0)
    top = max((i for i in ids if i is not None), default=0) + 1
    return [top if i is None else i for i in ids], top


def part_of(model: MultimodalModel) -> dict[int, str]:
    """Each weight's part (``GROUPS``) by ``id``: the tower of ``Encoder.towers()`` holding it, "head" for
    the task head's; weights missing here (projections, fusion, temperatures, BLIP-2's query tokens and
    language projection) are "fusion"."""
    owner: dict[int, str] = {}
    for tower_name, tower in model.encoder.towers().items():
        for p in tower.module(model.encoder).parameters():
            owner[id(p)] = tower_name
    if model.head is not None:
        for p in model.head.parameters():
            owner[id(p)] = "head"
    return owner


def named_by_group(model: MultimodalModel) -> dict[str, list[tuple[str, torch.Tensor]]]:
    """The trainable weights by part (``GROUPS``, ``part_of``); empty parts included."""
    groups: dict[str, list[tuple[str, torch.Tensor]]] = {name: [] for name in GROUPS}
    owner = part_of(model)
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[owner.get(id(p), "fusion")].append((name, p))
    return groups


def part_counts(model: MultimodalModel) -> dict[str, dict[str, int]]:
    """Parameters of each part holding any (``part_of``; a peft-wrapped tower with its adapters), in
    ``GROUPS`` order: ``{"parameters", "trainable_parameters", "frozen_parameters"}``. Frozen weights
    get no gradient and no optimizer state: what a run's memory holds of them is the weights alone."""
    owner = part_of(model)
    counts = {name: {"parameters": 0, "trainable_parameters": 0, "frozen_parameters": 0} for name in GROUPS}
    for p in model.parameters():
        part = counts[owner.get(id(p), "fusion")]
        part["parameters"] += p.numel()
        part["trainable_parameters" if p.requires_grad else "frozen_parameters"] += p.numel()
    return {name: c for name, c in counts.items() if c["parameters"]}


def param_groups(model: MultimodalModel, train: TrainConfig, optim: OptimConfig) -> list[dict[str, Any]]:
    """The optimizer's parameter groups over the trainable weights, each named ``group/decay|no_decay[/layerK]``.

    Unset group rates take ``train.lr``; with ``optim.layer_decay`` = d, layer k of a
    tower with L layers gets its group's rate times d^(L+1-k) (BEiT, Bao et al., 2021;
    ELECTRA, Clark et al., 2020). The schedule multiplies every group's rate alike.
    Raises ConfigError when a rate is set for a group holding no trainable weight.
    """
    named = named_by_group(model)
    for group in GROUPS:
        if getattr(optim.lr, group) is not None and not named[group]:
            have = ", ".join(g for g in GROUPS if named[g])
            raise ConfigError(
                f"optim.lr.{group} is set but no trainable weight is in the {group} group (groups with weights: {have}); "
                f"unset optim.lr.{group}"
            )
    out: list[dict[str, Any]] = []
    for group in GROUPS:
        lr = getattr(optim.lr, group) or train.lr
        params = named[group]
        if optim.layer_decay is not None and group in TOWERS:
            ids, top = layer_ids(params)
            scales = [optim.layer_decay ** (top - i) for i in ids]
            labels = [f"/layer{i}" for i in ids]
        else:
            scales, labels = [1.0] * len(params), [""] * len(params)
        buckets: dict[str, dict[str, Any]] = {}
        for (name, p), scale, label in zip(params, scales, labels, strict=True):
            decay = not excluded_from_decay(name, p)
            key = f"{group}/{'decay' if decay else 'no_decay'}{label}"
            bucket = buckets.setdefault(
                key, {"name": key, "params": [], "lr": lr * scale, "weight_decay": train.weight_decay if decay else 0.0}
            )
            bucket["params"].append(p)
        out += buckets.values()
    return out


def adamw_kernel(device_type: str, dtypes: Iterable[torch.dtype]) -> dict[str, bool]:
    """Which AdamW implementation to ask torch for: ``{"fused": True}`` (one kernel for every
    parameter, the default of transformers' Trainer on CUDA) when every trainable weight is a
    floating-point tensor on CUDA, else ``{}``, torch's own choice (``foreach``, a few kernels per
    parameter group, on accelerators; the per-tensor loop on the CPU, so CPU runs keep their bits).

    A pure function of where the weights live (PyTorch's ``torch.optim.AdamW`` documents
    ``fused`` for CUDA floating-point tensors), so the choice is tested without a GPU.
    """
    dtypes = list(dtypes)
    if device_type == "cuda" and dtypes and all(dtype.is_floating_point for dtype in dtypes):
        return {"fused": True}
    return {}


def build_optimizer(model: MultimodalModel, train: TrainConfig, optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay, Loshchilov & Hutter 2019) over ``param_groups``, fused where
    ``adamw_kernel`` says; or with ``optim.name = "sgd"`` SGD with ``optim.momentum`` and L2 weight
    decay. Call it once the model is on its device (the fused kernel checks where the weights are when it is built)."""
    groups = param_groups(model, train, optim)
    if optim.name == "sgd":
        return torch.optim.SGD(groups, lr=train.lr, momentum=optim.momentum, weight_decay=train.weight_decay)
    params = [p for group in groups for p in group["params"]]
    device_type = params[0].device.type if params and all(p.device == params[0].device for p in params) else "mixed"
    kernel = adamw_kernel(device_type, (p.dtype for p in params))
    return torch.optim.AdamW(groups, lr=train.lr, weight_decay=train.weight_decay, **kernel)
