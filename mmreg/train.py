"""The training loop: AdamW, epochs or max steps, progress, metrics, final evaluation."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from .components import Modality
from .config import TrainConfig
from .data import AugmentedSplit
from .errors import ConfigError
from .metrics import retrieval_metrics
from .model import MultimodalModel
from .runs import append_jsonl


def pick_device(name: str) -> torch.device:
    """``auto`` takes CUDA, then MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for but CUDA is not available here; use --device auto or cpu")
    return device


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@dataclass
class TrainResult:
    steps: int
    epochs: float
    samples: int
    seconds: float
    final_loss: float


ProgressFn = Callable[[int, int, dict[str, float]], None]


def train(
    model: MultimodalModel,
    loader: DataLoader,
    cfg: TrainConfig,
    device: torch.device,
    metrics_path: Path,
    on_step: ProgressFn | None = None,
) -> TrainResult:
    """Train in place; ``on_step(step, total, stats)`` reports progress after each step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(loader)
    total = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch
    model.train()
    step, samples, epoch = 0, 0, 0
    loss_value = math.nan
    start = time.perf_counter()
    while step < total:
        if isinstance(loader.dataset, AugmentedSplit):
            loader.dataset.epoch = epoch
        for batch in loader:
            batch = to_device(batch, device)
            loss, parts = model(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            n = batch["pixel_values"].shape[0]
            samples += n
            loss_value = loss.item()
            elapsed = time.perf_counter() - start
            stats = {"loss": loss_value, "samples_per_s": samples / max(elapsed, 1e-9)}
            if step % cfg.log_every == 0 or step == total:
                record: dict[str, Any] = {"step": step, "epoch": epoch, "split": "train", "loss": loss_value}
                record.update({f"loss/{k}": v.item() for k, v in parts.items()} if len(parts) > 1 else {})
                record["lr"] = optimizer.param_groups[0]["lr"]
                append_jsonl(metrics_path, record)
            if on_step is not None:
                on_step(step, total, stats)
            if step >= total:
                break
        epoch += 1
    return TrainResult(step, step / max(steps_per_epoch, 1), samples, time.perf_counter() - start, loss_value)


@torch.inference_mode()
def encode_split(model: MultimodalModel, loader: DataLoader, device: torch.device) -> tuple[Modality, Modality]:
    """Encode every image and caption of a split once; scoring reuses them."""
    images, texts = [], []
    for batch in loader:
        batch = to_device(batch, device)
        images.append(model.encode_images(batch["pixel_values"]))
        texts.append(model.encode_texts(batch["input_ids"], batch["attention_mask"]))
    return Modality.cat(images), Modality.cat(texts)


@torch.inference_mode()
def evaluate(
    model: MultimodalModel, loader: DataLoader, device: torch.device, *, retrieval: bool, rows_per_chunk: int = 64
) -> dict[str, float]:
    """Head accuracy over matched pairs where the model has a head; retrieval recall@K
    (every image against every text of the split) where ``retrieval`` is set."""
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    if model.head is not None:
        correct = total = 0
        for batch in loader:
            batch = to_device(batch, device)
            predicted = model.predict(batch).argmax(dim=-1)
            correct += (predicted == batch["labels"]).sum().item()
            total += batch["labels"].numel()
        metrics["accuracy"] = correct / max(total, 1)
    if retrieval:
        image, text = encode_split(model, loader, device)
        rows = range(0, len(image), rows_per_chunk)
        scores = torch.cat([model.fusion.score(image.index(slice(s, s + rows_per_chunk)), text) for s in rows])
        metrics.update(retrieval_metrics(scores.float().cpu()))
    model.train(was_training)
    return metrics
