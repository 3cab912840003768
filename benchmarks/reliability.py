"""Reliability figures: bad inputs refused, kills survived, nothing lost, and what determinism costs.

1. Every bad input of tests/reliability/harness.py through the real `mmreg` executable: how many
   were refused as promised (exit 2, one or two lines, no traceback, no run directory, every file
   byte-identical) and how many runs or files were lost or changed (must be 0).
2. A run SIGKILLed ``--kills`` times at random moments (every other one inside a checkpoint write),
   resumed after each: whether it ends bit-identical to an uninterrupted run.
3. The cost of ``train.deterministic``: the default model (clip + gated + infonce on shapes) trained
   by mmreg's Trainer with deterministic kernels on and off, repetitions alternating ABBA; the ratio
   of median step times (on / off) at torch's default thread count unless --threads is given.

Prints progress to stderr and ONE JSON object as the last line of stdout.

    python benchmarks/reliability.py                      # about 6-8 minutes on 2 CPU cores
    python benchmarks/reliability.py --device cuda --batch-size 128
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))
import harness  # noqa: E402


def parse_args() -> argparse.Namespace:
    def own(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--kills", type=int, default=10, help="SIGKILLs injected into one run (default 10)")
        ap.add_argument("--skip-cli", action="store_true", help="only measure the determinism cost")
        ap.set_defaults(threads=0, steps=30, warmup=5, repetitions=3)

    return common.parse_args(__doc__.split("\n\n")[0], own, "setting")


def bad_inputs() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        finished = harness.make_run(Path(tmp))
        refused, failures = 0, {}
        for case in harness.CASES:
            where = Path(tempfile.mkdtemp(dir=tmp))
            harness.prepare_case(case, where, finished)
            problem = harness.check_refused(case, where)
            refused += problem is None
            if problem:
                failures[case.id] = problem
            common.log(f"bad input {case.id}: {'refused' if problem is None else problem}")
    lost = sum("created" in p or "changed" in p for p in failures.values())
    return {"bad_inputs_tried": len(harness.CASES), "bad_inputs_refused": refused, "runs_or_files_lost": lost, "failures": failures}


def kills(n: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        result = harness.kill_and_resume(Path(tmp), kills=n)
    common.log(f"kills: {result}")
    return {
        "kills_injected": result["kills"],
        "kills_inside_a_checkpoint_write": result["kills_inside_a_checkpoint_write"],
        "resumed_runs_bit_identical": bool(result["same_weights"] and result["same_metrics"]),
    }


def step_time(deterministic: bool, args: argparse.Namespace, run_dir: Path) -> float:
    """Median seconds per optimizer step of the default model, after the warmup steps."""
    from mmreg.api import collate_for, prepare
    from mmreg.config import load_experiment
    from mmreg.data import AugmentedSplit
    from mmreg.determinism import deterministic_kernels
    from mmreg.train import Trainer

    flags = {"device": args.device, "batch_size": args.batch_size, "max_steps": args.steps, "seed": args.seed}
    exp = load_experiment(None, flags, [f"train.deterministic={str(deterministic).lower()}", "dataset.train_size=2048"])
    p = prepare(exp)
    stamps: list[float] = []
    with deterministic_kernels(exp.train.deterministic):
        trainer = Trainer(
            p.model, AugmentedSplit(p.train_split, p.augmenters, exp.seed), collate_for(p), None,  # type: ignore[arg-type]
            exp.train, seed=exp.seed, run_dir=run_dir, metric="recall@1",
        )  # fmt: skip
        trainer.evaluate = lambda: {"recall@1": 0.0}  # type: ignore[method-assign]  # not timed; skip the work
        trainer.fit(lambda step, total, stats: (common.sync(trainer.device), stamps.append(time.perf_counter())))
    return statistics.median(b - a for a, b in itertools.pairwise(stamps[args.warmup :]))


def determinism_cost(args: argparse.Namespace) -> dict[str, object]:
    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        order = [True, False, False, True] * ((args.repetitions + 1) // 2)
        for i, deterministic in enumerate(order[: 2 * args.repetitions]):
            run_dir = Path(tmp) / f"r{i}"
            run_dir.mkdir()
            times[deterministic].append(step_time(deterministic, args, run_dir))
            shutil.rmtree(run_dir, ignore_errors=True)
            common.log(f"deterministic={deterministic}: {times[deterministic][-1] * 1000:.1f} ms/step")
    on, off = statistics.median(times[True]), statistics.median(times[False])
    return {"deterministic_step_s": on, "nondeterministic_step_s": off, "determinism_cost_ratio": on / off}


def main() -> None:
    args = parse_args()
    result: dict[str, object] = {}
    if not args.skip_cli:
        result.update(bad_inputs())
        result.update(kills(args.kills))
    result.update(determinism_cost(args))
    result.update({"device": args.device, "batch_size": args.batch_size, "steps": args.steps, **common.environment()})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
