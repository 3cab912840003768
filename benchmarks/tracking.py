"""What a tracker costs per metrics.jsonl record: TensorBoard event files and an MLflow file store,
each fed the records a run writes (a training record, and every --eval-every steps a retrieval
evaluation), timed in alternating repetitions in one process. Prints JSON on stdout.

    python benchmarks/tracking.py --steps 200 --repetitions 5
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from common import environment, log, parse_args

from mmreg.config import Experiment, TrackConfig
from mmreg.tracking import Tracking

TRACKERS = ("tensorboard", "mlflow")


def records(steps: int, eval_every: int) -> list[dict]:
    out: list[dict] = []
    for step in range(1, steps + 1):
        out.append({"step": step, "epoch": 0, "split": "train", "loss": 1.0 / step, "lr": 1e-3})
        if step % eval_every == 0:
            recall = {f"{d}recall@{k}": 0.5 for d in ("i2t_", "t2i_", "") for k in (1, 5, 10)}
            out.append({"step": step, "epoch": 0, "split": "val", **recall})
    return out


def seconds_per_record(name: str, batch: list[dict], where: Path) -> float:
    """One tracker run fed ``batch``; the time of the logging alone (start and end are once per run)."""
    run_dir = where / f"{name}-{time.perf_counter_ns()}"
    run_dir.mkdir()
    tracking = Tracking(TrackConfig(trackers=[name]))
    trainer = SimpleNamespace(main=True, loop=SimpleNamespace(step=0), callbacks=[])  # what attach reads
    tracking.attach(trainer, Experiment(), run_dir)
    started = time.perf_counter()
    for record in batch:
        tracking.on_log(record)
    elapsed = time.perf_counter() - started
    tracking.finish(run_dir / "curves.png")
    return elapsed / len(batch)


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        lambda ap: ap.add_argument("--eval-every", type=int, default=20, help="a validation record every N steps (default 20)"),
        "tracker",
    )
    batch = records(args.steps, args.eval_every)
    times: dict[str, list[float]] = {name: [] for name in TRACKERS}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repetitions):
            for name in TRACKERS:
                times[name].append(seconds_per_record(name, batch, Path(tmp)))
            log(f"repetition {rep + 1}: " + ", ".join(f"{n} {times[n][-1] * 1e3:.2f} ms" for n in TRACKERS))
    print(
        json.dumps(
            {
                "records_per_run": len(batch),
                "ms_per_record_median": {n: round(statistics.median(t) * 1e3, 3) for n, t in times.items()},
                "ms_per_record_all": {n: [round(x * 1e3, 3) for x in t] for n, t in times.items()},
                "environment": environment(),
            }
        )
    )


if __name__ == "__main__":
    main()
