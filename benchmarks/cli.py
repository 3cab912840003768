"""Start-up cost of the CLI: `mmreg --help`, `mmreg list` and `mmreg show fusions gated` against `python -c pass`.

Each command runs as a fresh subprocess, the commands interleaved in every repetition so a busy
machine slows them alike; the figures are medians. `--baseline PYTHON` times another environment's
interpreter (an install of an earlier mmreg) in the same rounds, for a before/after side by side.
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

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "mmreg --help": ["-m", "mmreg", "--help"],
    "mmreg list": ["-m", "mmreg", "list"],
    "mmreg show fusions gated": ["-m", "mmreg", "show", "fusions", "gated"],
}


def wall_time(python: str, args: list[str], cwd: str) -> float:
    """Seconds from start to exit of ``python ARGS`` run in ``cwd``; a failing command stops the benchmark."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave the timed installs as they are
    start = time.perf_counter()
    result = subprocess.run([python, *args], capture_output=True, env=env, cwd=cwd)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{python} {' '.join(args)} failed: {result.stderr.decode()[-500:]}")
    return elapsed


def summarise(times: dict[str, list[float]]) -> dict[str, object]:
    """Medians, each command's cost over a bare Python start, and list/show's cost as a multiple of --help's."""
    median = {name: statistics.median(ts) for name, ts in times.items()}
    bare = median["python -c pass"]
    over = {name: m - bare for name, m in median.items() if name != "python -c pass"}
    help_cost = over["mmreg --help"]
    return {
        "median_s": {k: round(v, 4) for k, v in median.items()},
        "over_python_s": {k: round(v, 4) for k, v in over.items()},
        "list_over_help": round(over["mmreg list"] / help_cost, 3),
        "show_over_help": round(over["mmreg show fusions gated"] / help_cost, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repetitions", type=int, default=15, help="runs of each command, interleaved (default 15)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first, to fill the file cache (default 2)")
    ap.add_argument("--python", default=sys.executable, help="the interpreter whose mmreg is timed (default: this one)")
    ap.add_argument("--baseline", help="another environment's interpreter, timed in the same rounds (e.g. an earlier mmreg)")
    args = ap.parse_args()
    if args.repetitions < 1 or args.warmup < 0:
        ap.error("--repetitions must be at least 1 and --warmup at least 0")
    pythons = {"current": args.python, **({"baseline": args.baseline} if args.baseline else {})}
    for label, python in pythons.items():
        if not Path(python).exists():
            ap.error(f"--{'python' if label == 'current' else 'baseline'} {python} does not exist")
    times: dict[str, dict[str, list[float]]] = {label: {name: [] for name in COMMANDS} for label in pythons}
    # An empty working directory: `-m` puts it first on sys.path, and a source tree there (its
    # mmreg/ and *.egg-info) would shadow the installs being timed.
    with tempfile.TemporaryDirectory() as cwd:
        for round_ in range(args.warmup + args.repetitions):
            for label, python in pythons.items():
                for name, cmd in COMMANDS.items():
                    elapsed = wall_time(python, cmd, cwd)
                    if round_ >= args.warmup:
                        times[label][name].append(elapsed)
            log(f"round {round_ + 1}/{args.warmup + args.repetitions}")
    result: dict[str, object] = {"benchmark": "cli", "repetitions": args.repetitions, "environment": environment()}
    result.update({label: {"python": pythons[label], **summarise(t)} for label, t in times.items()})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
