"""Accumulation that keeps every negative: batch 32 x `train.grad_accum` 8 (`accumulation = "whole"`,
GradCache, `mmreg.accumulate.CachedBatch`) against one batch of 256: peak memory, step time and the
loss of the same first step.

Each configuration runs in its own subprocess (`--child`), so its peak memory is its own. A child
builds the model with `prepare(validate(...))`, collates the first 256 training samples once and
cuts that batch into 8 slices of 32 for the accumulated side (the same samples, the same padding).
After an untimed step of 4 samples on the same path (first-call allocations, gradients), the
step is the forward and backward of the 256 samples: `loss, _ = model(batch); loss.backward()`
for the whole batch, `cached.loss(micro_batches)` and `cached.backward(...)` for the accumulated one;
then `model.zero_grad(set_to_none=False)`. The optimizer's update is left out: it is the same on
both sides. The model is in eval mode (dropout off) and the seed is set before the first step, so
both sides start from the same weights and the same random draws (the `itm` loss samples its hard
negatives): the JSON gives both first-step losses, their difference and the largest difference of
the first step's gradients relative to the largest gradient.

Memory. On the CPU: the growth of the peak resident set (`getrusage(RUSAGE_SELF).ru_maxrss`) during
the steps over the resident set just before the first step, which is the activation memory (the
gradients are allocated before that point), and the absolute peak. On CUDA:
`torch.cuda.max_memory_allocated` over `memory_allocated` before the first step, and the peak.
Targets: step time of the accumulated side at most 1.3x the whole batch's (each micro-batch is
encoded twice), activation memory at most 1/8 + 10% of the whole batch's.

`--fusion`: `none` (the dual encoder, loss infonce: its score is a matrix product, so the encoders
dominate the memory) and `gated` (loss infonce + itm, the shortlist: with all pairs the fusion over
256^2 pairs, which runs once over the whole batch on both sides, would dominate); both by default.
`--preset tiny` is the clip tiny preset (the default job's encoder, 32-px images). `--preset vitb32`
builds a CLIP ViT-B/32-sized clip (hidden 768, 12 layers, 12 heads, patch 32, 224-px images,
projection and model.dim 512) and is meant for a GPU session (`--device cuda`); it was not run on
the 2-core CPU where the figures in benchmarks/README.md come from.

    python benchmarks/accumulation.py                               # CPU, tiny preset, none and gated
    python benchmarks/accumulation.py --fusion gated --steps 5
    python benchmarks/accumulation.py --device cuda --preset vitb32   # a GPU session
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from common import environment, log, sync

LOSSES = {"none": {"infonce": {}}, "gated": {"infonce": {}, "itm": {}}}
PRESETS = {
    "tiny": ({"name": "clip"}, {}, {}),
    "vitb32": (
        {"name": "clip", "hidden_size": 768, "layers": 12, "heads": 12, "patch_size": 32, "image_size": 224, "projection_dim": 512},
        {"image_size": 224},
        {"dim": 512},
    ),
}


def rss_mib() -> float:
    """The current resident set in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One configuration (--fusion, --mode) in this process: memory, step times, first loss."""
    from mmreg.accumulate import CachedBatch
    from mmreg.api import collate_for, prepare
    from mmreg.config import validate

    device = torch.device(args.device)
    encoder, dataset, model = PRESETS[args.preset]
    whole = args.batch_size * args.accum
    with tempfile.TemporaryDirectory() as scratch:
        cfg = {
            "encoder": encoder, "fusion": {"name": args.fusion}, "loss": LOSSES[args.fusion], "model": model,
            "dataset": {"name": "shapes", "train_size": whole, "val_size": 16, **dataset},
            "train": {"batch_size": args.batch_size, "device": args.device}, "runs_dir": scratch, "seed": args.seed,
        }  # fmt: skip
        p = prepare(validate(cfg))
    net = p.model.to(device).eval()
    batch = {k: v.to(device) for k, v in collate_for(p)(list(p.train_split[:whole])).items()}
    micro = [{k: v[i * args.batch_size : (i + 1) * args.batch_size] for k, v in batch.items()} for i in range(args.accum)]
    cached = CachedBatch(net, contextlib.nullcontext)

    def step(whole: dict[str, torch.Tensor], parts: list[dict[str, torch.Tensor]]) -> float:
        if args.mode == "whole":
            loss, _ = net(whole)
            loss.backward()
        else:
            loss, _ = cached.loss(parts)
            cached.backward(loss, lambda value: value.backward())
        return loss.item()

    # A step of 4 samples on the side's own path before the baseline: the libraries' first-call
    # allocations and the gradients are then in place, so the growth after it is activations.
    step({k: v[:4] for k, v in batch.items()}, [{k: v[i : i + 2] for k, v in batch.items()} for i in (0, 2)])
    for param in net.parameters():
        if param.requires_grad and param.grad is None:
            param.grad = torch.zeros_like(param)
    net.zero_grad(set_to_none=False)

    gc.collect()
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
    before, peak_before = (rss_mib(), peak_rss_mib()) if device.type == "cpu" else (before, before)
    torch.manual_seed(args.seed)
    first = step(batch, micro)
    grads = {name: param.grad.detach().cpu().clone() for name, param in net.named_parameters() if param.grad is not None}
    if args.grads:
        torch.save(grads, args.grads)
    net.zero_grad(set_to_none=False)
    times = []
    for _ in range(args.steps):
        sync(device)
        start = time.perf_counter()
        step(batch, micro)
        net.zero_grad(set_to_none=False)
        sync(device)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        memory = {"measure": "torch.cuda.max_memory_allocated", "before_mib": round(before, 1), "peak_mib": round(peak, 1)}
    else:
        peak = peak_rss_mib()
        memory = {
            "measure": "ru_maxrss", "rss_before_mib": round(before, 1), "peak_before_mib": round(peak_before, 1),
            "peak_mib": round(peak, 1), "steps_set_the_peak": peak > peak_before,
        }  # fmt: skip
    memory["activation_mib"] = round(peak - before, 1)
    return {
        "mode": args.mode,
        "fusion": args.fusion,
        "first_loss": first,
        "step_seconds": round(statistics.median(times), 4),
        "step_times": [round(t, 4) for t in times],
        "memory": memory,
        "parameters": sum(param.numel() for param in net.parameters()),
    }


def run_child(args: argparse.Namespace, fusion: str, mode: str, grads: Path) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--child", "--fusion", fusion, "--mode", mode, "--grads", str(grads),
        "--batch-size", str(args.batch_size), "--accum", str(args.accum), "--steps", str(args.steps),
        "--preset", args.preset, "--device", args.device, "--threads", str(args.threads), "--seed", str(args.seed),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"child {fusion}/{mode} failed with {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(args: argparse.Namespace, fusion: str, scratch: Path) -> dict[str, Any]:
    label = f"batch {args.batch_size} x grad_accum {args.accum}"
    sides = {}
    for mode in ("whole", "accum"):
        sides[mode] = run_child(args, fusion, mode, scratch / f"{fusion}-{mode}.pt")
        s = sides[mode]
        log(f"{fusion}: {mode}: loss {s['first_loss']:.6f}, step {s['step_seconds']:.3f}s, activations {s['memory']['activation_mib']:.1f} MiB, peak {s['memory']['peak_mib']:.1f} MiB")
    g_whole, g_accum = (torch.load(scratch / f"{fusion}-{m}.pt") for m in ("whole", "accum"))
    scale = max(g.abs().max().item() for g in g_whole.values())
    grad_diff = max((g_whole[k] - g_accum[k]).abs().max().item() for k in g_whole)
    w, a = sides["whole"], sides["accum"]
    activation_ratio = a["memory"]["activation_mib"] / w["memory"]["activation_mib"] if w["memory"]["activation_mib"] > 0 else None
    time_ratio = a["step_seconds"] / w["step_seconds"]
    return {
        "loss": "+".join(LOSSES[fusion]),
        f"batch {args.batch_size * args.accum}": w,
        label: a,
        "step_time_ratio": round(time_ratio, 3),  # accumulated / whole batch; target <= 1.3
        "activation_memory_ratio": None if activation_ratio is None else round(activation_ratio, 3),  # target <= 1/8 + 10%
        "peak_memory_ratio": round(a["memory"]["peak_mib"] / w["memory"]["peak_mib"], 3),
        "first_loss_difference": abs(w["first_loss"] - a["first_loss"]),
        "first_step_max_grad_difference_relative": grad_diff / scale if scale else grad_diff,
        "targets_met": {
            "step_time_ratio <= 1.3": time_ratio <= 1.3,
            "activation_memory_ratio <= 1/8 + 10%": activation_ratio is not None and activation_ratio <= 1.1 / args.accum,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fusion", choices=("none", "gated", "both"), default="both", help="none (loss infonce), gated (infonce + itm) or both (default)")
    ap.add_argument("--batch-size", type=int, default=32, help="micro-batch of the accumulated side (default 32)")
    ap.add_argument("--accum", type=int, default=8, help="grad_accum of the accumulated side; the whole batch is batch-size x accum (default 8)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps after the first (default 3)")
    ap.add_argument("--preset", choices=tuple(PRESETS), default="tiny", help="tiny (clip tiny preset) or vitb32 (for a GPU session)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    ap.add_argument(
        "--threads", type=int, default=1,
        help="torch.set_num_threads (default 1, stable on a shared CPU, as benchmarks/common.py; 0 keeps torch's own choice)",
    )  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=("whole", "accum"), default="whole", help=argparse.SUPPRESS)
    ap.add_argument("--grads", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.steps < 1 or args.accum < 1:
        ap.error("--steps and --accum must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args)))
        return
    start = time.perf_counter()
    fusions = ("none", "gated") if args.fusion == "both" else (args.fusion,)
    with tempfile.TemporaryDirectory() as scratch:
        result: dict[str, Any] = {
            "benchmark": "accumulation",
            "what": f"batch {args.batch_size} x grad_accum {args.accum} (accumulation whole, GradCache) vs one batch of "
            f"{args.batch_size * args.accum}: forward + backward of the same samples, eval mode; ratios accumulated / whole",
            "fusions": {fusion: compare(args, fusion, Path(scratch)) for fusion in fusions},
        }
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    result["settings"] = {k: v for k, v in vars(args).items() if k not in ("child", "mode", "grads")}
    result["environment"] = environment()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
