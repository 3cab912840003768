"""`mmreg search` with and without pruning: the same space, sampler seed and trial count.

Prints JSON: wall time and best metric of each, time ratio (pruned / unpruned) and the gap
between the best metrics. Target: pruning within 0.02 of the unpruned best in at most 60% of
its time. The random sampler draws the same configuration for trial N in both searches, so
the only difference is the pruner stopping trials early.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import environment, log

SPACE = """
[search]
fusion = ["none", "gated"]
"train.lr" = {{low = 1e-7, high = 3e-2, log = true}}
"loss.infonce.temperature" = {{}}
"""

BASE = """
[encoder]
name = "clip"
hidden_size = 32
projection_dim = 32

[loss.infonce]

[dataset]
name = "shapes"
train_size = {train_size}
val_size = {val_size}

[model]
dim = 32

[train]
max_steps = {steps}
eval_every = {eval_every}
batch_size = 16
eval_batch_size = {val_size}
device = "{device}"
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12, help="trials of each search (default 12)")
    ap.add_argument("--steps", type=int, default=24, help="optimizer steps of a trial that is not pruned (default 24)")
    ap.add_argument("--eval-every", type=int, default=4, help="steps between evaluations, each reported to the pruner (default 4)")
    ap.add_argument("--train-size", type=int, default=128)
    ap.add_argument("--val-size", type=int, default=32)
    ap.add_argument("--metric", default="recall@5", help="validation metric searched (default recall@5)")
    ap.add_argument("--pruner", default="median", help="the pruner compared with none (default median)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import mmreg

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "space.toml"
        settings = {k: getattr(args, k) for k in ("train_size", "val_size", "steps", "eval_every", "device")}
        path.write_text(f"seed = {args.seed}\n" + BASE.format(**settings) + SPACE.format())
        for pruner in (args.pruner, "none"):
            log(f"searching with pruner {pruner}: {args.trials} trials")
            started = time.perf_counter()
            summary = mmreg.search(
                path, trials=args.trials, study=f"bench-{pruner}", sampler="random", pruner=pruner, metric=args.metric, runs_dir=Path(tmp) / "runs"
            )
            seconds = time.perf_counter() - started
            results[pruner] = {
                "seconds": round(seconds, 1),
                "best": summary["best"]["value"] if summary["best"] else None,
                "states": summary["states"],
                "steps_trained": sum(r["steps"] or 0 for r in summary["rows"]),
            }
    pruned, full = results[args.pruner], results["none"]
    ratio = pruned["seconds"] / full["seconds"]
    gap = full["best"] - pruned["best"]
    print(
        json.dumps(
            {
                "benchmark": "search",
                "trials": args.trials,
                "metric": args.metric,
                "pruned": pruned,
                "unpruned": full,
                "time_ratio": round(ratio, 3),
                "best_gap": round(gap, 4),
                "meets_target": ratio <= 0.6 and gap <= 0.02,
                "settings": vars(args),
                "environment": environment(),
            }
        )
    )


if __name__ == "__main__":
    main()
