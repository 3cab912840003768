"""Training a pairwise fusion on all pairs against the contrastive shortlist (the `itm` loss): step
time as the batch grows, and the default job's recall@1 and wall time.

Part `steps`: the gated fusion on the tiny clip preset (the default job's encoder, fusion and
shapes images), built with `prepare(validate(...))` and timed directly on the model in train mode
(`loss, _ = model(batch); loss.backward(); model.zero_grad()`, one collated batch of the first B
training samples), at batch sizes --batches. With `loss infonce` alone the fusion scores every
pair of the batch (b^2 pairs: about 4x per doubling of b); with `infonce + itm` the contrastive
loss is the cosine of pooled vectors over all pairs and the fusion scores each positive and one
hard negative per image and per caption (3b pairs: about 2x per doubling). Reports the median
seconds of --steps steps after --warmup untimed ones for both, side by side at each batch size,
their ratio and each one's growth from one batch size to the next. All pairs are skipped above
--max-all-pairs-batch, and above any batch size whose all-pairs step took more than --step-limit
seconds; the JSON lists the skipped sizes.

Part `job`: the default job (`mmreg run`: clip tiny, gated, shapes 4000/256, 4 epochs, batch 32)
through `mmreg.run`, for each of --seeds, with all pairs (`loss infonce`, `task.shortlist=all`)
and with the shortlist (`loss infonce + itm`, evaluated with the shortlist of 128 candidates it
defaults to). Reports recall@1 (mean of both directions), i2t/t2i recall@1 and @5 on the
validation split, train seconds and the whole call's wall time, per seed and as mean and spread
(max - min) over seeds, and the ratio of the wall times. The shortlist runs are evaluated again
from their final weights with every pair scored (`evaluate_run(..., overrides=["task.shortlist=all"])`,
the Python side of `mmreg eval RUN --set task.shortlist=all`), to show what the shortlist in
evaluation costs in recall.

    python benchmarks/contrastive_scaling.py                          # both parts, the default job in full
    python benchmarks/contrastive_scaling.py --part job --epochs 2    # a shorter job
    python benchmarks/contrastive_scaling.py --part steps --batches 32 64 128 --steps 5
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from common import environment, log

import mmreg
from mmreg.api import collate_for, prepare
from mmreg.config import validate
from mmreg.history import evaluate_run

ALL_PAIRS = {"infonce": {}}
SHORTLIST = {"infonce": {}, "itm": {}}
METRICS = ("recall@1", "i2t_recall@1", "t2i_recall@1", "i2t_recall@5", "t2i_recall@5")


def step_times(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Median seconds per step of all pairs and of the shortlist at each batch size."""
    built = {}
    for kind, loss in (("all_pairs", ALL_PAIRS), ("shortlist", SHORTLIST)):
        cfg = {
            "encoder": {"name": "clip"}, "fusion": {"name": "gated"}, "loss": loss,
            "dataset": {"name": "shapes", "train_size": max(args.batches), "val_size": 16},
            "train": {"batch_size": max(2, min(args.batches)), "device": "cpu"}, "runs_dir": str(root / "runs"), "seed": args.seed,
        }  # fmt: skip
        p = prepare(validate(cfg))
        p.model.train()
        built[kind] = p
    skipped: list[int] = []
    too_slow = False
    rows: dict[str, Any] = {}
    for b in args.batches:
        row: dict[str, Any] = {}
        for kind, p in built.items():
            if kind == "all_pairs" and (b > args.max_all_pairs_batch or too_slow):
                skipped.append(b)
                continue
            torch.manual_seed(args.seed)
            batch = collate_for(p)(list(p.train_split[:b]))
            times = []
            for i in range(args.warmup + args.steps):
                start = time.perf_counter()
                loss, _ = p.model(batch)
                loss.backward()
                p.model.zero_grad()
                if i >= args.warmup:
                    times.append(time.perf_counter() - start)
            row[f"{kind}_seconds"] = round(statistics.median(times), 4)
            log(f"batch {b}: {kind} {row[f'{kind}_seconds']:.3f}s per step ({', '.join(f'{t:.3f}' for t in times)})")
            if kind == "all_pairs" and row[f"{kind}_seconds"] > args.step_limit:
                too_slow = True
        if "all_pairs_seconds" in row:
            row["ratio"] = round(row["all_pairs_seconds"] / row["shortlist_seconds"], 2)  # all pairs / shortlist
        rows[str(b)] = row
    sizes = [str(b) for b in args.batches]
    growth = {
        f"{a}->{b}": {
            kind: round(rows[b][f"{kind}_seconds"] / rows[a][f"{kind}_seconds"], 2)
            for kind in ("all_pairs", "shortlist")
            if f"{kind}_seconds" in rows[a] and f"{kind}_seconds" in rows[b]
        }
        for a, b in itertools.pairwise(sizes)
    }
    return {
        "what": "median seconds per step (forward, backward, zero_grad; train mode) of the gated fusion on the tiny clip preset; "
        "ratio: all pairs / shortlist; growth: seconds at the larger batch / at the smaller",
        "fusion_pairs_per_step": {"all_pairs": "b^2", "shortlist": "3b (each positive, 1 hard negative per image and per caption)"},
        "batches": rows,
        "growth": growth,
        "all_pairs_skipped": sorted(set(skipped)),
    }


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.mean(values), 4), "spread": round(max(values) - min(values), 4), "values": [round(v, 4) for v in values]}


def main_job(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The default job with all pairs and with the shortlist, per seed."""
    runs: dict[str, list[dict[str, Any]]] = {"all_pairs": [], "shortlist": []}
    for seed in args.seeds:
        for kind, loss in (("all_pairs", ALL_PAIRS), ("shortlist", SHORTLIST)):
            cfg: dict[str, Any] = {
                "encoder": {"name": "clip"}, "fusion": {"name": "gated"}, "loss": loss,
                "dataset": {"name": "shapes", "train_size": args.train_size, "val_size": args.val_size},
                "train": {"epochs": args.epochs, "batch_size": 32, "device": "cpu"},
                "runs_dir": str(root / "runs"), "name": f"{kind}-seed{seed}", "seed": seed,
            }  # fmt: skip
            if kind == "all_pairs":
                cfg["task"] = {"name": "retrieval", "shortlist": "all"}
            log(f"seed {seed}: {kind} ({', '.join(loss)})")
            start = time.perf_counter()
            summary = mmreg.run(cfg, progress=False)
            wall = time.perf_counter() - start
            row = {m: summary["metrics"].get(m) for m in METRICS}
            row.update({"train_seconds": summary["train_seconds"], "wall_seconds": round(wall, 2), "steps": summary["steps"],
                        "final_loss": round(summary["final_loss"], 4), "scoring": summary.get("retrieval")})  # fmt: skip
            if kind == "shortlist":
                start = time.perf_counter()
                every = evaluate_run(summary["run_dir"], checkpoint="final", device="cpu", runs_dir=root / "runs", overrides=["task.shortlist=all"])
                row["every_pair_eval"] = {m: every.get(m) for m in METRICS}
                row["every_pair_eval_seconds"] = round(time.perf_counter() - start, 2)
            log(f"  recall@1 {row['recall@1']:.4f}, train {row['train_seconds']:.1f}s, wall {wall:.1f}s"
                + (f", every pair recall@1 {row['every_pair_eval']['recall@1']:.4f}" if kind == "shortlist" else ""))  # fmt: skip
            runs[kind].append({"seed": seed, **row})
    out: dict[str, Any] = {"runs": runs, "summary": {}}
    for kind, rows in runs.items():
        out["summary"][kind] = {m: spread([r[m] for r in rows]) for m in (*METRICS, "train_seconds", "wall_seconds")}
    out["summary"]["shortlist_every_pair_eval"] = {m: spread([r["every_pair_eval"][m] for r in runs["shortlist"]]) for m in METRICS}
    walls = {k: statistics.mean(r["wall_seconds"] for r in rows) for k, rows in runs.items()}
    trains = {k: statistics.mean(r["train_seconds"] for r in rows) for k, rows in runs.items()}
    out["wall_ratio"] = round(walls["all_pairs"] / walls["shortlist"], 2)  # all pairs / shortlist, means over seeds
    out["train_ratio"] = round(trains["all_pairs"] / trains["shortlist"], 2)
    out["recall@1_gap"] = round(out["summary"]["all_pairs"]["recall@1"]["mean"] - out["summary"]["shortlist"]["recall@1"]["mean"], 4)  # all pairs - shortlist
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("steps", "job", "all"), default="all")
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128, 256], help="batch sizes of the step timing (default 32 64 128 256)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per batch size and loss (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before them (default 1)")
    ap.add_argument("--max-all-pairs-batch", type=int, default=256, help="largest batch timed with all pairs (default 256)")
    ap.add_argument("--step-limit", type=float, default=60.0, help="seconds per all-pairs step beyond which larger batches are skipped (default 60)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of the main job (default 0 1)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs of the main job (default 4, the default job's)")
    ap.add_argument("--train-size", type=int, default=4000, help="training samples of the main job (default 4000)")
    ap.add_argument("--val-size", type=int, default=256, help="validation samples of the main job (default 256)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the step timing's models (default 0)")
    ap.add_argument(
        "--threads", type=int, default=1,
        help="torch.set_num_threads (default 1, stable on a shared CPU, as benchmarks/common.py; 0 keeps torch's own choice)",
    )  # fmt: skip
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be at least 1 and --warmup at least 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"benchmark": "contrastive_scaling"}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        if args.part in ("steps", "all"):
            start = time.perf_counter()
            result["steps"] = step_times(args, root)
            result["steps"]["wall_seconds"] = round(time.perf_counter() - start, 1)
        if args.part in ("job", "all"):
            start = time.perf_counter()
            result["job"] = main_job(args, root)
            result["job"]["wall_seconds"] = round(time.perf_counter() - start, 1)
    result["settings"] = vars(args)
    result["environment"] = environment()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
