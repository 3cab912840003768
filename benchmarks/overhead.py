"""mmreg's training step against a hand-written PyTorch loop on the same model, data and optimizer.

Both loops train fresh copies of one composed ``MultimodalModel`` (same initial
weights) on the same K batches, collated once before anything is timed, with
the same AdamW, LambdaLR schedule and gradient clipping. Only the optimizer
steps after ``--warmup`` are timed; for mmreg from the ``on_step`` callback, so
the final evaluation and checkpoint writing are excluded. After one short
untimed run of each, repetitions alternate in ABBA order (mmreg, hand, hand,
mmreg, ...) so drifting machine load and warm caches favour neither side.

Each repetition gives its median step time (on CUDA, where the hand loop is
synchronised only at the window's ends, its mean step time); ``mmreg_step_s``
and ``hand_step_s`` are the medians of those over the repetitions, and
``ratio`` = mmreg_step_s / hand_step_s (target <= 1.05). ``ratio_of_mean_steps``
compares window means instead (periodic costs included, bursts of load too);
``ratio_paired_median`` is the median of the per-repetition ratios.
Prints progress to stderr and ONE JSON object as the last line of stdout.

    python benchmarks/overhead.py                        # CPU default, about 1-2 minutes on 2 cores
    python benchmarks/overhead.py --device cuda --steps 300 --repetitions 7 --batch-size 128
"""

from __future__ import annotations

import argparse
import atexit
import copy
import itertools
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import common


def parse_args() -> argparse.Namespace:
    def own(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--batches", type=int, default=8, help="distinct pre-collated batches cycled through (default 8)")
        ap.add_argument("--fusion", default="none", choices=["none", "gated"], help="fusion of the composed model (default none)")
        ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"], help="mmreg train.precision; the hand loop autocasts to match (default fp32)")
    return common.parse_args(__doc__.split("\n\n")[0], own, "loop")


def run_mmreg(base, batches, exp, args, run_dir: Path) -> tuple[float, list[float], str]:
    """One mmreg repetition: mean seconds per step over the timed window, per-step durations, device."""
    from mmreg.results import Metric
    from mmreg.train import Trainer

    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = exp.train.model_copy(update={"max_steps": args.steps})
    k = len(batches)
    served = iter(range(10**12))

    def collate(ids: list[int]) -> dict[str, torch.Tensor]:
        # The precomputed batch; the loader hands over indices, so nothing is decoded or tokenised.
        return batches[next(served) % k]

    # One epoch covers the whole run, so the sampler's permutation is drawn once, like the hand loop's list.
    samples = range(args.steps * args.batch_size)
    trainer = Trainer(
        copy.deepcopy(base), samples, collate, None, cfg,  # type: ignore[arg-type]
        seed=exp.seed, run_dir=run_dir, metric=Metric("recall@1"),
    )
    trainer.evaluate = lambda: {"recall@1": 0.0}  # type: ignore[method-assign]  # not timed; skip the work
    device = trainer.device
    stamps: dict[int, float] = {}

    def on_step(step: int, total: int, stats: dict[str, float]) -> None:
        common.sync(device)
        stamps[step] = time.perf_counter()

    trainer.fit(on_step)
    window = [stamps[s] for s in range(max(args.warmup, 1), args.steps + 1)]
    per_step = [b - a for a, b in itertools.pairwise(window)]
    return (window[-1] - window[0]) / len(per_step), per_step, str(device)


def run_hand(base, batches, exp, args, device: torch.device) -> tuple[float, list[float]]:
    """The same step written by hand: forward, backward, clip, AdamW, LambdaLR, zero_grad
    (mmreg's lr_factor is only the schedule's formula, so both sides decay alike; mmreg's
    parameter groups, so both sides step the same AdamW groups)."""
    from mmreg.optim import param_groups
    from mmreg.train import lr_factor

    cfg = exp.train
    model = copy.deepcopy(base).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(param_groups(model, cfg, exp.optim), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = args.steps
    warmup = int(cfg.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup, cfg.schedule))
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.precision)
    scaler = torch.amp.GradScaler(device.type) if args.precision == "fp16" else None
    k = len(batches)
    first = max(args.warmup, 1)  # the window starts at the end of this step, as on the mmreg side
    stamps = [0.0] * (total + 1)
    common.sync(device)
    stamps[0] = time.perf_counter()
    for step in range(total):
        batch = {name: t.to(device, non_blocking=True) for name, t in batches[step % k].items()}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss, _ = model(batch)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step + 1 == first or step + 1 == total or device.type != "cuda":
            common.sync(device)  # on CUDA only the window's ends: the hand loop has no per-step sync of its own
        stamps[step + 1] = time.perf_counter()
    window = stamps[first:]
    per_step = [b - a for a, b in itertools.pairwise(window)]
    return (window[-1] - window[0]) / len(per_step), per_step


def main() -> None:
    args = parse_args()

    from mmreg.api import collate_for, prepare
    from mmreg.config import validate
    from mmreg.train import pick_device

    device = pick_device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="mmreg-bench-overhead-"))
    atexit.register(shutil.rmtree, tmp, True)  # run directories and checkpoints of the repetitions
    n_batches = max(1, args.batches)
    exp = validate(
        {
            "seed": args.seed,
            "runs_dir": str(tmp),
            "encoder": {"name": "clip", "preset": "tiny"},
            "fusion": {"name": args.fusion},
            "loss": {"infonce": {}},
            "dataset": {"name": "shapes", "train_size": n_batches * args.batch_size, "val_size": 16},
            "train": {
                "batch_size": args.batch_size,
                "max_steps": args.steps,
                "device": str(device),
                "precision": args.precision,
                # never during the timed steps: only the final evaluation (stubbed) and checkpoint run
                "eval_every": args.steps + 1,
                "checkpoint_every": args.steps + 1,
            },
        }
    )
    started = time.perf_counter()
    prepared = prepare(exp)
    exp, base = prepared.exp, prepared.model
    collate = collate_for(prepared)
    split = prepared.train_split
    batches = [collate([split[i] for i in range(b * args.batch_size, (b + 1) * args.batch_size)]) for b in range(n_batches)]
    common.log(f"prepared model ({sum(p.numel() for p in base.parameters())} parameters) and {n_batches} batches in {time.perf_counter() - started:.1f}s")

    # Per repetition: the median of its per-step durations (robust to another process's burst on a
    # shared CPU) and the mean over the window (every cost, periodic ones included). On CUDA the hand
    # loop is only synchronised at the window's ends, so there only the mean is exact.
    per_step = device.type != "cuda"
    reps: dict[str, list[tuple[float, float]]] = {"mmreg": [], "hand": []}
    used = str(device)
    # One short untimed run of each first, so neither side pays the process's cold start.
    prime = argparse.Namespace(**{**vars(args), "steps": min(args.steps, args.warmup + 10)})
    run_mmreg(base, batches, exp, prime, tmp / "mmreg-prime")
    run_hand(base, batches, exp, prime, device)
    for rep in range(args.repetitions):
        # ABBA order: mmreg first on even repetitions, hand first on odd ones.
        for side in ("mmreg", "hand") if rep % 2 == 0 else ("hand", "mmreg"):
            if side == "mmreg":
                mean, steps, used = run_mmreg(base, batches, exp, args, tmp / f"mmreg-{rep}")
            else:
                mean, steps = run_hand(base, batches, exp, args, device)
            reps[side].append((statistics.median(steps) if per_step else mean, mean))
        m, h = reps["mmreg"][-1][0], reps["hand"][-1][0]
        common.log(f"rep {rep + 1}/{args.repetitions}: mmreg {m * 1e3:.2f} ms/step, hand {h * 1e3:.2f} ms/step, ratio {m / h:.3f}")

    def med(side: str, i: int) -> float:
        return statistics.median(r[i] for r in reps[side])

    mmreg_s, hand_s = med("mmreg", 0), med("hand", 0)
    result: dict[str, Any] = {
        "benchmark": "overhead",
        "ratio": round(mmreg_s / hand_s, 4),
        "target": "<= 1.05",
        "mmreg_step_s": round(mmreg_s, 6),
        "hand_step_s": round(hand_s, 6),
        "statistic": "median over repetitions of each one's median step" if per_step else "median over repetitions of each one's mean step",
        "ratio_of_mean_steps": round(med("mmreg", 1) / med("hand", 1), 4),
        "ratio_paired_median": round(statistics.median(m[0] / h[0] for m, h in zip(reps["mmreg"], reps["hand"])), 4),
        "mmreg_reps_step_s": [round(r[0], 6) for r in reps["mmreg"]],
        "hand_reps_step_s": [round(r[0], 6) for r in reps["hand"]],
        "timed_steps_per_rep": args.steps - max(args.warmup, 1),
        "steps": args.steps,
        "warmup": args.warmup,
        "repetitions": args.repetitions,
        "batch_size": args.batch_size,
        "batches": n_batches,
        "fusion": args.fusion,
        "loss": "infonce",
        "precision": args.precision,
        "device": used,
        **common.environment(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
