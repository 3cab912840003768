"""Keeping what the starting model knew: zero-shot, fine-tuned, WiSE-FT and model soups on data with a
real distribution shift, built offline.

A tiny CLIP is first trained on clean shapes (background noise 12) and exported: the "pretrained"
model. It is then fine-tuned on a shifted distribution (noise `--noise`, the fine-tuning data,
scored on its validation split) at three learning rates, each scored at every evaluation on the
clean shapes too (`[eval_sets.clean]`). `mmreg wise` mixes the best fine-tuned run with the weights
it started from (α = 0 is the pretrained model, zero-shot on both), `mmreg soup` averages the three
runs. Prints one JSON object: recall@1 on both sets for the zero-shot, fine-tuned, WiSE-FT and soup
weights, and the path of wise.png.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import environment, log

import mmreg
from mmreg.export import export_run
from mmreg.weightspace import soup, wise

ENCODER = {"hidden_size": 64, "layers": 2, "projection_dim": 32}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrain-steps", type=int, default=300)
    ap.add_argument("--steps", type=int, default=150, help="fine-tuning steps per run (default 150)")
    ap.add_argument("--noise", type=float, default=70.0, help="background noise of the fine-tuning data (clean: 12)")
    ap.add_argument("--train-size", type=int, default=2048)
    ap.add_argument("--val-size", type=int, default=256)
    ap.add_argument("--out", default=None, help="keep the runs here (default: a temporary directory)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.out or scratch)
        data = {"name": "shapes", "train_size": args.train_size, "val_size": args.val_size}
        log("pretraining on clean shapes")
        base = mmreg.run({
            "encoder": {"name": "clip", **ENCODER}, "fusion": {"name": "none"}, "loss": {"clip": {}}, "model": {"dim": 32},
            "dataset": data, "train": {"max_steps": args.pretrain_steps, "batch_size": 32, "lr": 2e-3, "device": "cpu"},
            "runs_dir": str(root / "runs"), "name": "pretrained",
        }, progress=False)  # fmt: skip
        export_run(base["run_dir"], root / "pretrained", checkpoint="final")
        runs = []
        for lr in (1e-3, 3e-4, 1e-4):
            log(f"fine-tuning on noise {args.noise} at lr {lr}")
            runs.append(mmreg.run({
                "encoder": {"name": "clip", "pretrained": str(root / "pretrained" / "encoder")}, "fusion": {"name": "none"},
                "loss": {"clip": {}}, "model": {"dim": 32}, "dataset": {**data, "noise": args.noise},
                "eval_sets": {"clean": {"set": ["dataset.noise=12"]}},
                "train": {"max_steps": args.steps, "batch_size": 32, "lr": lr, "device": "cpu"},
                "runs_dir": str(root / "runs"), "name": f"finetuned-lr{lr:g}",
            }, progress=False))  # fmt: skip
        best = max(runs, key=lambda s: s["best"]["value"])
        log("WiSE-FT of the best run, soups of all three")
        mixed = wise(best["run_dir"], device="cpu")
        soups = soup([s["run_dir"] for s in runs], device="cpu")
        rows = {f"{r['alpha']:g}": r for r in mixed["rows"]}
        pick = lambda m: {"shifted (fine-tuning data)": round(m["recall@1"], 4), "original (clean)": round(m["clean/recall@1"], 4)}  # noqa: E731
        both = max(mixed["rows"], key=lambda r: r["recall@1"] + r["clean/recall@1"])
        result = {
            "benchmark": "weightspace",
            "recall@1": {
                "zero-shot (α=0)": pick(rows["0"]),
                "fine-tuned (α=1)": pick(rows["1"]),
                f"WiSE-FT α={mixed['alpha']:g} (best on the fine-tuning data)": pick(next(r for r in mixed["rows"] if r["alpha"] == mixed["alpha"])),
                f"WiSE-FT α={both['alpha']:g} (best on both)": pick(both),
                "uniform soup": pick(soups["uniform"]),
                f"greedy soup ({len(soups['kept'])} of 3)": pick(soups["greedy"]),
                **{f"ingredient {r['run']}": pick(r) for r in soups["ingredients"]},
            },
            "alphas": {a: pick(r) for a, r in rows.items()},
            "plot": str(Path(mixed["run_dir"]) / "wise.png") if args.out else None,
            "settings": vars(args),
            "environment": environment(),
        }
        print(json.dumps(result))


if __name__ == "__main__":
    main()
