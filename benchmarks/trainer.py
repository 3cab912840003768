"""transformers' Trainer against mmreg training the same CLIPModel on the same data and batch size.

mmreg side: ``--encoder clip --fusion none --loss clip`` with the tiny CLIP
preset, which computes exactly CLIPModel's contrastive loss. The transformers
side trains a copy of that very CLIPModel (same initial weights) as the
run_clip.py example does: a torch Dataset of preprocessed examples, a
data_collator stacking them, ``model(..., return_loss=True)``. Both read the
same pre-processed, pre-tokenised tensors (captions padded to max_length) and
stack them per batch with the same function, so the loops are compared, not
the preprocessing. Optimizer on both: torch AdamW as mmreg builds it (the
per-tensor one on the CPU, the fused one on CUDA), same lr and weight decay,
linear decay, no warmup, gradient clipping 1.0.

Steps are timed from optimizer step ``--warmup`` to the last (mmreg: its
on_step callback; transformers: a TrainerCallback's on_step_end; both
synchronise CUDA there). A repetition's samples/s is batch_size / its median
step (robust to bursts of load on a shared CPU); ``ratio_of_window_means``
compares whole-window means instead. After one short untimed run of each,
repetitions alternate in ABBA order (mmreg, Trainer, Trainer, mmreg, ...).
``ratio`` = the median over repetitions of mmreg samples/s / the same of the
Trainer's (target >= 1.0); ``ratio_paired_median`` is the median of the
per-repetition ratios. Prints progress to stderr and ONE JSON object as
the last line of stdout.

    python benchmarks/trainer.py                        # CPU default, about 1-2 minutes on 2 cores
    python benchmarks/trainer.py --device cuda --steps 400 --batch-size 256 --repetitions 5
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import copy
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import common


def parse_args() -> argparse.Namespace:
    def own(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--examples", type=int, default=1024, help="pre-processed examples in memory (default 1024)")
        ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"], help="mixed precision on both sides (default fp32)")
        ap.add_argument("--lr", type=float, default=1e-3)
        ap.add_argument("--weight-decay", type=float, default=0.0, help="0 makes both identical: Trainer exempts biases/LayerNorm from decay, mmreg does not")
        ap.add_argument("--schedule", default="linear", choices=["linear", "constant"])
        ap.add_argument("--compile", action="store_true", help="torch.compile the model on both sides (train.compile, TrainingArguments.torch_compile)")
        ap.add_argument(
            "--hf-optim",
            default=None,
            help="TrainingArguments.optim (default: the optimizer mmreg builds, adamw_torch on the CPU, adamw_torch_fused on CUDA)",
        )

    def check(args: argparse.Namespace) -> str | None:
        return "--examples must be at least --batch-size" if args.examples < args.batch_size else None

    return common.parse_args(__doc__.split("\n\n")[0], own, "trainer", check)


class Examples(torch.utils.data.Dataset):
    """Pre-processed examples, one dict of tensors each, as run_clip.py's dataset yields them."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors
        self.size = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: t[index] for name, t in self.tensors.items()}


def stack(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {name: torch.stack([e[name] for e in examples]) for name in examples[0]}


def hf_collate(examples: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """run_clip.py's collate_fn: stack, and ask CLIPModel for its loss."""
    return {**stack(examples), "return_loss": True}


def hf_optim(args: argparse.Namespace, device: torch.device) -> str:
    """The Trainer's optimizer: --hf-optim, or the AdamW kernel mmreg builds on ``device`` (mmreg.optim.adamw_kernel)."""
    return args.hf_optim or ("adamw_torch_fused" if device.type == "cuda" else "adamw_torch")


def timed(stamps: dict[int, float], args: argparse.Namespace) -> tuple[float, float]:
    """Samples/s of one repetition: at its median step, and over the whole timed window."""
    first = max(args.warmup, 1)
    steps = [stamps[s + 1] - stamps[s] for s in range(first, args.steps)]
    return args.batch_size / statistics.median(steps), args.batch_size * len(steps) / sum(steps)


def run_mmreg(base, examples: Examples, exp, args, run_dir: Path) -> tuple[tuple[float, float], str]:
    from mmreg.results import Metric
    from mmreg.train import Trainer

    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = exp.train.model_copy(update={"max_steps": args.steps, "compile": args.compile})
    trainer = Trainer(
        copy.deepcopy(base), examples, stack, None, cfg,  # type: ignore[arg-type]
        seed=exp.seed, run_dir=run_dir, metric=Metric("recall@1"),
    )
    trainer.evaluate = lambda: {"recall@1": 0.0}  # type: ignore[method-assign]  # after the timed steps; skip the work
    device = trainer.device
    stamps: dict[int, float] = {}

    def on_step(step: int, total: int, stats: dict[str, float]) -> None:
        common.sync(device)
        stamps[step] = time.perf_counter()

    trainer.fit(on_step)
    return timed(stamps, args), str(device)


def run_hf(clip, examples: Examples, args, device: torch.device, out_dir: Path) -> tuple[tuple[float, float], str, str]:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    stamps: dict[int, float] = {}

    class Stamps(TrainerCallback):
        def on_step_end(self, targs, state, control, **kwargs):
            common.sync(device)
            stamps[state.global_step] = time.perf_counter()

    targs = TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        lr_scheduler_type=args.schedule,
        warmup_steps=0,
        max_grad_norm=1.0,
        optim=hf_optim(args, device),
        torch_compile=args.compile,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        logging_steps=args.steps + 1,
        dataloader_num_workers=0,
        dataloader_drop_last=True,  # mmreg's sampler drops the last partial batch too
        disable_tqdm=True,
        remove_unused_columns=False,
        use_cpu=device.type == "cpu",
        bf16=args.precision == "bf16",
        fp16=args.precision == "fp16",
        seed=args.seed,
    )
    trainer = Trainer(model=copy.deepcopy(clip), args=targs, train_dataset=examples, data_collator=hf_collate, callbacks=[Stamps()])
    with contextlib.redirect_stdout(sys.stderr):  # its end-of-training log line is printed to stdout
        trainer.train()
    return timed(stamps, args), str(trainer.args.device), type(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer).__name__


def side_by_side(args: argparse.Namespace, device: torch.device, tmp: Path, encoder: dict[str, Any]):
    """The experiment (``encoder`` params for the clip encoder, ``--fusion none --loss clip``), mmreg's
    composed model, the very CLIPModel inside it and the pre-processed, pre-tokenised examples both
    sides train on. Returns (exp, model, clip, examples)."""
    import transformers

    from mmreg.api import prepare
    from mmreg.config import validate

    transformers.logging.set_verbosity_error()
    exp = validate(
        {
            "seed": args.seed,
            "runs_dir": str(tmp),
            "encoder": {"name": "clip", **encoder},
            "fusion": {"name": "none"},
            "loss": {"clip": {}},
            # drawn at the encoder's input size where it sets one (224 px for gpu.py), else the dataset's default
            "dataset": {"name": "shapes", "train_size": args.examples, "val_size": 16, **{k: v for k, v in encoder.items() if k == "image_size"}},
            "train": {
                "batch_size": args.batch_size,
                "max_steps": args.steps,
                "lr": args.lr,
                "weight_decay": args.weight_decay,
                "schedule": args.schedule,
                "warmup_ratio": 0.0,
                "max_grad_norm": 1.0,
                "device": str(device),
                "precision": args.precision,
                "eval_every": args.steps + 1,  # never during the timed steps
                "checkpoint_every": args.steps + 1,
            },
        }
    )
    prepared = prepare(exp)
    exp, base = prepared.exp, prepared.model
    encoder_part = base.encoder
    clip = encoder_part.model  # the very CLIPModel mmreg trains; the Trainer side gets deep copies of it
    samples = prepared.train_split
    tokens = encoder_part.tokenizer(
        [s.caption for s in samples], padding="max_length", truncation=True, max_length=encoder_part.max_length, return_tensors="pt"
    )
    examples = Examples(
        {
            "pixel_values": encoder_part.preprocess([s.image for s in samples]),
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
        }
    )
    return exp, base, clip, examples


def main() -> None:
    args = parse_args()
    from mmreg.train import pick_device

    device = pick_device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="mmreg-bench-trainer-"))
    atexit.register(shutil.rmtree, tmp, True)  # run directories and checkpoints of the repetitions
    started = time.perf_counter()
    exp, base, clip, examples = side_by_side(args, device, tmp, {"preset": "tiny"})
    mmreg_params = sum(p.numel() for p in base.parameters() if p.requires_grad)
    hf_params = sum(p.numel() for p in clip.parameters())
    # Same model, same loss: check it on one batch before timing anything.
    with torch.no_grad():
        batch = stack([examples[i] for i in range(args.batch_size)])
        mmreg_loss = base(batch)[0].item()
        hf_loss = clip(**batch, return_loss=True).loss.item()
    common.log(
        f"prepared {len(examples)} examples in {time.perf_counter() - started:.1f}s; trainable parameters "
        f"mmreg {mmreg_params}, CLIPModel {hf_params}; initial loss mmreg {mmreg_loss:.6f}, CLIPModel {hf_loss:.6f}"
    )

    reps: dict[str, list[tuple[float, float]]] = {"mmreg": [], "hf": []}
    used, optimizer = str(device), ""
    # One short untimed run of each first, so neither side pays the process's cold start.
    prime = argparse.Namespace(**{**vars(args), "steps": min(args.steps, args.warmup + 10)})
    run_mmreg(base, examples, exp, prime, tmp / "mmreg-prime")
    run_hf(clip, examples, prime, device, tmp / "hf-prime")
    for rep in range(args.repetitions):
        # ABBA order: mmreg first on even repetitions, the Trainer first on odd ones.
        for side in ("mmreg", "hf") if rep % 2 == 0 else ("hf", "mmreg"):
            if side == "mmreg":
                rates, used = run_mmreg(base, examples, exp, args, tmp / f"mmreg-{rep}")
            else:
                rates, _, optimizer = run_hf(clip, examples, args, device, tmp / f"hf-{rep}")
            reps[side].append(rates)
        m, h = reps["mmreg"][-1][0], reps["hf"][-1][0]
        common.log(f"rep {rep + 1}/{args.repetitions}: mmreg {m:.1f} samples/s, Trainer {h:.1f} samples/s, ratio {m / h:.3f}")

    def med(side: str, i: int) -> float:
        return statistics.median(r[i] for r in reps[side])

    m, h = med("mmreg", 0), med("hf", 0)
    result = {
        "benchmark": "trainer",
        "ratio": round(m / h, 4),
        "target": ">= 1.0",
        "mmreg_samples_per_s": round(m, 2),
        "trainer_samples_per_s": round(h, 2),
        "statistic": "median over repetitions of batch_size / each one's median step",
        "ratio_of_window_means": round(med("mmreg", 1) / med("hf", 1), 4),
        "ratio_paired_median": round(statistics.median(m[0] / h[0] for m, h in zip(reps["mmreg"], reps["hf"])), 4),
        "mmreg_reps_samples_per_s": [round(r[0], 2) for r in reps["mmreg"]],
        "trainer_reps_samples_per_s": [round(r[0], 2) for r in reps["hf"]],
        "timed_steps_per_rep": args.steps - max(args.warmup, 1),
        "steps": args.steps,
        "warmup": args.warmup,
        "repetitions": args.repetitions,
        "batch_size": args.batch_size,
        "examples": len(examples),
        "seq_len": int(examples.tensors["input_ids"].shape[1]),
        "precision": args.precision,
        "compile": args.compile,
        "trainer_optim": hf_optim(args, device),
        "trainer_optimizer_class": optimizer,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "schedule": args.schedule,
        "parameters": hf_params,
        "initial_loss_abs_diff": abs(mmreg_loss - hf_loss),
        "device": used,
        **common.environment(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
