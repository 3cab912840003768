"""`mmreg runs list` and `mmreg runs compare` over many synthetic run directories, against `mmreg --help`.

Run directories are written as a run writes them (a resolved config.toml, summary.json and a
metrics.jsonl of `--evals` evaluations): `--runs` of them, settings cycling through four fusions and
their seeds, so `runs compare` of all of them forms four groups. Each command runs as a fresh
subprocess, the commands interleaved in every round; the figures are medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import environment, log

FUSIONS = ("none", "concat", "gated", "cross_attention")


def write_runs(runs: Path, count: int, evals: int) -> list[str]:
    """``count`` run directories as `mmreg run` leaves them; returns their names."""
    import random

    import tomli_w

    from mmreg.config import to_file_layout, validate

    rng = random.Random(0)
    names = []
    for i in range(count):
        fusion, seed = FUSIONS[i % len(FUSIONS)], i // len(FUSIONS)
        name = f"run-{i:05d}"
        run = runs / name
        run.mkdir(parents=True)
        layout = to_file_layout(validate({"name": name, "seed": seed, "fusion": {"name": fusion}}))
        (run / "config.toml").write_text(tomli_w.dumps(layout))
        rows, best = [], (0, -1.0)
        for step in range(1, evals + 1):
            value = min(1.0, 0.1 * FUSIONS.index(fusion) + 0.02 * step + rng.gauss(0, 0.03))
            rows.append({"step": step * 10, "epoch": step, "split": "val", "recall@1": value, "recall@5": min(1.0, value + 0.2)})
            rows.append({"step": step * 10, "epoch": step, "split": "train", "loss": 3.0 / step, "lr": 1e-3})
            best = max(best, (step * 10, value), key=lambda b: b[1])
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        summary = {
            "task": "retrieval", "metrics": {k: v for k, v in rows[-2].items() if "recall" in k}, "steps": evals * 10,
            "best": {"metric": "recall@1", "higher_is_better": True, "value": best[1], "step": best[0]},
        }  # fmt: skip
        (run / "summary.json").write_text(json.dumps(summary))
        names.append(name)
    return names


def wall_time(args: list[str], cwd: str) -> float:
    """Seconds from start to exit of ``python ARGS``; a failing command stops the benchmark."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *args], capture_output=True, env=env, cwd=cwd)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed: {result.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000, help="run directories (default 1000)")
    ap.add_argument("--evals", type=int, default=20, help="evaluations in each metrics.jsonl (default 20)")
    ap.add_argument("--repetitions", type=int, default=5, help="rounds of every command, interleaved (default 5)")
    args = ap.parse_args()
    if args.runs < 2 or args.evals < 1 or args.repetitions < 1:
        ap.error("--runs must be at least 2, --evals and --repetitions at least 1")
    with tempfile.TemporaryDirectory() as cwd:
        names = write_runs(Path(cwd) / "runs", args.runs, args.evals)
        log(f"wrote {len(names)} run directories")
        commands = {
            "mmreg --help": ["-m", "mmreg", "--help"],
            "runs list": ["-m", "mmreg", "runs", "list", "--json"],
            "runs list --where --sort": ["-m", "mmreg", "runs", "list", "--where", "fusion.name=gated", "--sort", "recall@1", "--json"],
            "runs compare (grouped)": ["-m", "mmreg", "runs", "compare", *names, "--json"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for round_ in range(args.repetitions):
            for name, command in commands.items():
                times[name].append(wall_time(command, cwd))
            log(f"round {round_ + 1}/{args.repetitions}")
    median = {name: statistics.median(ts) for name, ts in times.items()}
    result = {
        "benchmark": "registry",
        "runs": args.runs,
        "evals": args.evals,
        "repetitions": args.repetitions,
        "median_s": {k: round(v, 3) for k, v in median.items()},
        "over_help": {k: round(v / median["mmreg --help"], 2) for k, v in median.items() if k != "mmreg --help"},
        "environment": environment(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
