"""The training loop on HF accelerate: precision, accumulation, clipping, schedule,
evaluation, early stopping, checkpoints, resume, signals and non-finite losses."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .accumulate import CachedBatch, across_batch, average_gradients
from .balance import Balancing, gradient_norms
from .checkpoint import LoopState, clean_checkpoints, load_checkpoint, save_best, save_checkpoint
from .components import Balancer, LoopCallback
from .config import OptimConfig, TrainConfig
from .badimages import Tally
from .data import AugmentedSplit, Batches, Collate, local_processes, resolve_workers, train_loader
from .errors import ConfigError, DataError, TrainingDiverged, TrainingInterrupted
from .model import MultimodalModel
from .optim import build_optimizer
from .precision import resolve_precision
from .ema import moving_average
from .results import EMA, Metric
from .runs import append_jsonl, write_atomic
from .sampling import EpochBatches
from .streams import is_stream, stream_loader

ProgressFn = Callable[[int, int, dict[str, float]], None]


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
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for but CUDA is not available here; use --device auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device '{name}' asked for but MPS is not available here; use --device auto or cpu")
    return device


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch on ``device`` (uint8 pixels stay uint8: the model normalises them there, ``mmreg.pixels``)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warmup to the full rate over ``warmup`` steps, then constant, linear or cosine decay to 0."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.inference_mode()
def evaluate(model: MultimodalModel, loader: Iterable[Mapping[str, torch.Tensor]], device: torch.device) -> dict[str, float]:
    """The task's metrics (``Task.evaluations``) over the split: each batch is loaded and
    encoded once, and every evaluation reads the same features."""
    was_training = model.training
    model.eval()
    evaluations = model.task.evaluations(model)
    for batch in loader:
        batch = to_device(batch, device)
        features = model.encode(batch)
        for evaluation in evaluations:
            evaluation.update(model, features, batch)
    metrics: dict[str, float] = {}
    for evaluation in evaluations:
        metrics.update(evaluation.compute())
    model.train(was_training)
    return metrics


@dataclass
class TrainResult:
    steps: int
    epochs: float
    samples: int
    seconds: float
    final_loss: float
    metrics: dict[str, float]
    best: float | None
    best_step: int | None
    skipped_steps: int
    stopped_early: bool


class StopSignals:
    """Turns SIGINT/SIGTERM into a flag the loop reads after each step, so the step
    finishes and a checkpoint is written instead of dying mid-update."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def enable_gradient_checkpointing(model: MultimodalModel) -> None:
    """Turn on activation checkpointing in every encoder part that supports it (transformers or timm)."""
    found, enabled = False, []
    for name, module in model.encoder.named_modules():
        if any(name.startswith(f"{done}.") for done in enabled):  # inside a model already enabled as a whole (BLIP-2's parts)
            continue
        if getattr(module, "supports_gradient_checkpointing", False) and hasattr(module, "gradient_checkpointing_enable"):
            enabled.append(name)
            # transformers 5 renamed it; the old name still works but warns
            getattr(module, "activation_checkpointing_enable", module.gradient_checkpointing_enable)()
            found = True
        elif hasattr(module, "set_grad_checkpointing") and module is not model.encoder:
            module.set_grad_checkpointing(True)
            found = True
    if not found:
        raise ConfigError("this encoder has no part that supports gradient checkpointing; unset train.gradient_checkpointing")


class Trainer:
    """One run's loop. Only the main process writes files; every process evaluates the whole
    validation split, so metrics never depend on how many processes trained."""

    def __init__(
        self,
        model: MultimodalModel,
        train_samples: Sequence[Any],
        collate: Collate,
        val_loader: Iterable[Mapping[str, torch.Tensor]],
        cfg: TrainConfig,
        *,
        seed: int,
        run_dir: Path | None,
        metric: Metric,
        num_workers: int | str = 0,
        max_unreadable: float = 0.01,
        optim: OptimConfig | None = None,
        callbacks: Sequence[LoopCallback] = (),
        image_groups: Sequence[int] | None = None,
        eval_sets: Sequence[tuple[str, Any, Iterable[Mapping[str, torch.Tensor]]]] = (),
        balancers: Mapping[str, Balancer] | None = None,
    ) -> None:
        """``run_dir`` may be set later, once every check has passed; ``trajectory``, stored with
        each checkpoint, is set by the caller (see mmreg.resume). ``image_groups`` (the image of
        each training row, ``mmreg.sampling.caption_groups``): one caption per image per epoch.
        ``eval_sets``: ``(name, task, loader)`` scored at every evaluation as ``name/METRIC``.
        ``balancers``: gradient hooks applied in order to every optimizer step before clipping
        (``mmreg.balance``)."""
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        # A new run in the same process may ask for another precision; the process group stays.
        AcceleratorState._reset_state(reset_partial_state=False)
        self.cfg, self.run_dir, self.metric = cfg, run_dir, metric
        self.trajectory: dict[str, Any] = {}
        device = pick_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, device)
        mixed = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}[self.precision]
        self.accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=mixed)
        self.device = self.accelerator.device
        if cfg.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.train_samples = train_samples
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        self.num_workers = resolve_workers(num_workers, self.device, local_processes())
        pin = self.device.type == "cuda"
        if is_stream(train_samples):  # a stream batches itself (mmreg.streams)
            self.sampler, stream = stream_loader(
                train_samples, collate, cfg.batch_size, seed, rank=rank, world=world, num_workers=self.num_workers, pin_memory=pin
            )
            self.loader = Batches(stream, Tally("train", len(train_samples), max_unreadable))
        else:
            self.sampler = EpochBatches(len(train_samples), cfg.batch_size, seed, rank=rank, world=world, groups=image_groups)
            self.loader = train_loader(
                train_samples, self.sampler, collate, seed=seed, num_workers=self.num_workers, pin_memory=pin, max_unreadable=max_unreadable
            )
        self.steps_per_epoch = len(self.sampler) // cfg.grad_accum
        if self.steps_per_epoch == 0:
            raise DataError(
                f"the training split has {self.sampler.size} {'images' if image_groups else 'samples'}, fewer than one step of "
                f"{cfg.batch_size} x {cfg.grad_accum} (accumulation) x {world} (processes); "
                f"lower train.batch_size or train.grad_accum"
            )
        self.total = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * self.steps_per_epoch
        self.val_loader, self.eval_sets = val_loader, list(eval_sets)
        self.params = [p for p in model.parameters() if p.requires_grad]  # walked once, not every clipping step
        self.balancing = Balancing(balancers, model, seed) if balancers else None
        self.norms: dict[str, float] = {}  # the last logged step's gradient norm of each part (grad_norm/PART)
        prepared = model.to(self.device)  # before the optimizer: a fused AdamW checks where the weights are
        self.ema = moving_average(model, cfg.ema, cfg.ema_warmup)  # before compiling and wrapping: a plain copy
        optimizer = build_optimizer(model, cfg, optim or OptimConfig())
        warmup = int(cfg.warmup_ratio * self.total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, self.total, warmup, cfg.schedule)
        )
        if cfg.compile:
            prepared = torch.compile(prepared)  # type: ignore[assignment]
        self.model, self.optimizer = self.accelerator.prepare(prepared, optimizer)
        self.cached = None  # K micro-batches as one batch for losses across the batch (mmreg.accumulate)
        if cfg.grad_accum > 1 and cfg.accumulation == "whole" and across_batch(model):
            self.cached = CachedBatch(model, self.accelerator.autocast)
        self.loop = LoopState()
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            callback.on_train_start(self.total, self.steps_per_epoch)
            callback.on_metric(self.metric)

    # -- files (main process only) ---------------------------------------------

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def bare_model(self) -> MultimodalModel:
        model = self.accelerator.unwrap_model(self.model)
        return getattr(model, "_orig_mod", model)  # under torch.compile

    def _log(self, record: dict[str, Any]) -> None:
        if self.main:
            append_jsonl(self.run_dir / "metrics.jsonl", record)
            for callback in self.callbacks:
                callback.on_log(record)

    def save_last(self) -> None:
        if self.main:
            save_checkpoint(
                self.run_dir / "checkpoints",
                self.bare_model,
                self.optimizer,
                self.scheduler,
                self.accelerator.scaler,
                self.loop,
                self.trajectory,
                self.ema.module if self.ema is not None else None,
            )

    def resume(self) -> None:
        """Continue from checkpoints/last, dropping metric lines written after it and what a kill
        left of an unfinished checkpoint."""
        self.loop = load_checkpoint(
            self.run_dir / "checkpoints" / "last", self.bare_model, self.optimizer, self.scheduler, self.accelerator.scaler,
            self.ema.module if self.ema is not None else None,
        )  # fmt: skip
        path = self.run_dir / "metrics.jsonl"
        if self.main:
            clean_checkpoints(self.run_dir / "checkpoints")
        if self.main and path.is_file():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= self.loop.step:
                        kept.append(line)
                except json.JSONDecodeError:  # a line cut short by the kill
                    continue
            write_atomic(path, "".join(line + "\n" for line in kept))

    # -- the loop ----------------------------------------------------------------

    def _micro_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Micro-batches from the current position on, across epochs, until the step budget is spent."""
        per_epoch = self.steps_per_epoch * self.cfg.grad_accum
        while True:
            self.sampler.set_epoch(self.loop.epoch, self.loop.batch_in_epoch)
            if isinstance(self.train_samples, AugmentedSplit):
                self.train_samples.epoch = self.loop.epoch
            for batch in self.loader:
                if self.loop.batch_in_epoch >= per_epoch:
                    break
                yield batch
            self.loop.epoch += 1
            self.loop.batch_in_epoch = 0

    def _optimizer_step(self, logged: bool) -> None:
        """The step from the accumulated gradients: gradient norms (``self.norms``, on a ``logged``
        step), the balancers, clipping, the optimizer, the schedule and the moving average."""
        accelerator, cfg, loop = self.accelerator, self.cfg, self.loop
        if logged:
            self.norms = gradient_norms(self.bare_model, accelerator.scaler.get_scale() if accelerator.scaler is not None else 1.0)
        unscaled = self.balancing is not None and accelerator.scaler is not None
        if unscaled:  # balancers see true gradients (fp16)
            accelerator.unscale_gradients()
        if self.balancing is not None:
            self.balancing.apply(loop.step, loop.epoch, self.steps_per_epoch, self.device)
        if cfg.max_grad_norm is not None:  # once unscaled, accelerate's clipping would unscale a second time
            clip = torch.nn.utils.clip_grad_norm_ if unscaled else accelerator.clip_grad_norm_
            clip(self.params, cfg.max_grad_norm)
        self.optimizer.step()
        if not accelerator.optimizer_step_was_skipped:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.bare_model, step=loop.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        loop.bad_in_a_row = 0

    def _skip_step(self) -> None:
        """A step whose loss was not finite on some process: no update, counted and logged; the run
        stops after ``train.max_bad_steps`` in a row (TrainingDiverged)."""
        loop = self.loop
        self.norms = {}  # no gradients of this step to show
        if self.balancing is not None:
            self.balancing.discard()
        self.optimizer.zero_grad(set_to_none=True)
        loop.bad_in_a_row += 1
        loop.skipped_steps += 1
        self._log({"step": loop.step + 1, "split": "train", "skipped": "non-finite loss"})
        if loop.bad_in_a_row >= self.cfg.max_bad_steps:
            raise TrainingDiverged(self._diverged_message())

    def _global_loss(self, value: float) -> float:
        """The mean of every process's loss: the global batch's loss, also when each process holds
        its share (sharded contrastive losses, see mmreg.components.Step). Not finite when any
        process's is not, so all skip together, or DDP hangs."""
        if self.accelerator.num_processes > 1:
            value = self.accelerator.reduce(torch.tensor([value], device=self.device), reduction="mean").item()
        return value

    def evaluate(self) -> dict[str, float]:
        """The task's metrics of the weights and each evaluation set's as ``SET/NAME``, and with
        train.ema all of those of their moving average as ``ema/...``."""
        metrics = self._scores(self.bare_model)
        if self.ema is not None:
            metrics.update({EMA + k: v for k, v in self._scores(self.ema.module).items()})
        return metrics

    def _scores(self, model: MultimodalModel) -> dict[str, float]:
        from .evalsets import score_sets

        return {**evaluate(model, self.val_loader, self.device), **score_sets(model, self.eval_sets, self.device)}

    def _after_eval(self, metrics: dict[str, float]) -> bool:
        """Record an evaluation, keep the best weights; True when early stopping says stop."""
        value = metrics.get(self.metric.name)
        if value is None:
            raise ConfigError(f"validation metric '{self.metric.name}' is not computed here (have: {', '.join(metrics)}); set train.metric")
        self.loop.history.append({"step": self.loop.step, **metrics})
        self._log({"step": self.loop.step, "epoch": self.loop.epoch, "split": "val", **metrics})
        if self.metric.better(value, self.loop.best):
            self.loop.best, self.loop.best_step, self.loop.evals_since_best = value, self.loop.step, 0
            if self.main:
                record = {"step": self.loop.step, **self.metric.record(), "value": value, "metrics": metrics}
                chosen = self.ema.module if self.ema is not None and self.metric.name.startswith(EMA) else self.bare_model
                save_best(self.run_dir / "checkpoints", chosen, record)  # the moving average's where its metric decides
        else:
            self.loop.evals_since_best += 1
        for callback in self.callbacks:
            callback.on_eval(self.loop.step, metrics, self.run_dir)
        patience = self.cfg.early_stopping_patience
        return patience is not None and self.loop.evals_since_best >= patience

    def _diverged_message(self) -> str:
        """What is true of a run stopped by non-finite losses: where it stopped, whether a checkpoint exists."""
        loop, last = self.loop, self.run_dir / "checkpoints" / "last"
        said = f"loss was not finite for {loop.bad_in_a_row} steps in a row (last at step {loop.step + 1}); "
        if loop.step + 1 == loop.bad_in_a_row:  # no step ever had a finite loss: the settings, not the training
            return said + "no step had a finite loss and no checkpoint was written; check the loss settings and the data"
        kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written"
        fp16 = ", or use --precision bf16 instead of fp16" if self.precision == "fp16" else ""
        return said + f"{kept}; lower train.lr or keep train.max_grad_norm set{fp16}"

    def fit(self, on_step: ProgressFn | None = None) -> TrainResult:
        cfg, loop, accelerator = self.cfg, self.loop, self.accelerator
        accum = cfg.grad_accum
        self.model.train()
        started = time.perf_counter() - loop.seconds
        samples_at_start, time_at_start = loop.samples, time.perf_counter()
        loss_value, window_loss, window_bad, micro = math.nan, 0.0, False, 0
        self.norms = {}
        pending: list[dict[str, torch.Tensor]] = []  # the step's micro-batches so far, where they train as one batch
        metrics: dict[str, float] = loop.history[-1] if loop.history else {}
        evaluated_at = loop.history[-1]["step"] if loop.history else -1
        stopped_early = False
        if self.balancing is not None:
            self.balancing.discard()  # nothing of a pass before training (checks, a previous fit)
        with StopSignals() as signals:
            batches = self._micro_batches()
            while loop.step < self.total and not stopped_early:
                batch = to_device(next(batches), self.device)
                if micro % accum == 0:  # the first micro-batch of an optimizer step
                    for callback in self.callbacks:
                        callback.on_step_start(loop.step)
                sync = (micro + 1) % accum == 0
                no_sync = accelerator.no_sync(self.model) if not sync and accelerator.num_processes > 1 else contextlib.nullcontext()
                if self.cached is not None:
                    pending.append(batch)
                    if sync:
                        loss, parts = self.cached.loss(pending)
                        pending, value = [], self._global_loss(loss.item())
                        if math.isfinite(value):
                            self.cached.backward(loss, accelerator.backward)
                            average_gradients(self.params)
                            window_loss = value
                        else:
                            window_bad = True
                else:
                    with no_sync:
                        loss, parts = self.model(batch)
                        value = self._global_loss(loss.item())  # the one host sync of the step
                        if math.isfinite(value):
                            accelerator.backward(loss / accum)
                            window_loss += value / accum
                        else:
                            window_bad = True
                micro += 1
                loop.batch_in_epoch += 1
                loop.samples += batch["pixel_values"].shape[0] * accelerator.num_processes
                if not sync:
                    continue
                if window_bad:
                    self._skip_step()
                else:
                    self._optimizer_step((loop.step + 1) % cfg.log_every == 0 or loop.step + 1 == self.total)
                    loss_value = window_loss
                loop.step += 1
                window_loss, window_bad = 0.0, False
                loop.seconds = time.perf_counter() - started
                rate = (loop.samples - samples_at_start) / max(time.perf_counter() - time_at_start, 1e-9)
                lr = self.optimizer.param_groups[0]["lr"]
                if loop.step % cfg.log_every == 0 or loop.step == self.total:
                    record: dict[str, Any] = {"step": loop.step, "epoch": loop.epoch, "split": "train", "loss": loss_value, "lr": lr, **self.norms}
                    if self.balancing is not None:
                        record.update(self.balancing.logged())
                    if len(parts) > 1:
                        record.update({f"loss/{k}": self._global_loss(v.item()) for k, v in parts.items()})
                    self._log(record)
                if on_step is not None:
                    on_step(loop.step, self.total, {"loss": loss_value, "lr": lr, "samples_per_s": rate})
                end_of_epoch = loop.batch_in_epoch == self.steps_per_epoch * accum
                eval_due = loop.step % cfg.eval_every == 0 if cfg.eval_every else end_of_epoch
                if eval_due or loop.step == self.total:
                    metrics = self.evaluate()
                    evaluated_at = loop.step
                    stopped_early = self._after_eval(metrics)
                checkpoint_due = eval_due or loop.step == self.total or (cfg.checkpoint_every and loop.step % cfg.checkpoint_every == 0)
                if checkpoint_due and loop.bad_in_a_row == 0:  # never replace the last good checkpoint mid-streak
                    self.save_last()
                if signals.received is not None:
                    self.save_last()
                    raise TrainingInterrupted(signals.received, loop.step, str(self.run_dir))
        if evaluated_at != loop.step:  # resumed at the very end, stopped early between evaluations, or no step to take
            metrics = self.evaluate()
            if self.total == 0 and not loop.history:  # train.max_steps 0: the initial weights are the run's one evaluation
                self._after_eval(metrics)
                self.save_last()
        return TrainResult(
            steps=loop.step,
            epochs=loop.step / self.steps_per_epoch,
            samples=loop.samples,
            seconds=loop.seconds,
            final_loss=loss_value,
            metrics=metrics if "step" not in metrics else {k: v for k, v in metrics.items() if k != "step"},
            best=loop.best,
            best_step=loop.best_step,
            skipped_steps=loop.skipped_steps,
            stopped_early=stopped_early,
        )
