"""Modality imbalance on digits and OGM-GE against no balancing, plus what the imbalance diagnostics cost.

The setting: `digits` (scikit-learn's real handwritten digits) with `dataset.caption_accuracy` below 1,
so the caption names the right digit only that often (the rest name another digit at random, in both
splits): the text is the easy, unreliable modality and only the image carries the whole label.
Classification with the `dual` encoder (its tiny random-init ViT and BERT, all of it trained),
`concat` fusion and `ce`, batch 32, mmreg's cosine schedule, with each optimizer in `--optimizer`:
AdamW (lr 1e-3, weight decay 0.01: mmreg's defaults) and/or SGD with momentum 0.9 and L2 weight
decay 1e-4 (OGM-GE's paper's; lr 0.1, chosen by a sweep without a balancer, see
benchmarks/README.md); `--lr`, `--weight-decay`, `--momentum` override them. The text tower is
learned first (text-only accuracy reaches `caption_accuracy` within the first epochs) while the
image-only accuracy is still low: the imbalance OGM-GE targets. (Under SGD at these learning
rates the image tower hardly learns in 10 epochs, even with no informative caption.)

Part 1, `runs`, per optimizer: for every seed in `--seeds`, the same run with no balancer and with `ogm_ge` at each
`--alpha` x `--noise` (and `--modulation-starts` / `--modulation-ends`); same steps, seed, data
and evaluation points. For each run: the fused `accuracy`, `accuracy/image_only`,
`accuracy/text_only` on the validation split, last and best over the evaluations (every
`--eval-every` steps), the first evaluation's (the imbalance early on), and the mean time of a
training step (intervals between `on_step_start` calls of a `LoopCallback` that contain no
evaluation). `summary` averages each arm over the seeds and gives its difference from no balancing
(of the means, and per seed in `minus_none_per_seed`). The output holds one such part per optimizer,
under `optimizers`, with the learning rate and weight decay it ran with.

Part 2, `diagnostics`: the cost of the imbalance diagnostics, with the first optimizer. The same run (no balancer, and
`ogm_ge` at the first `--alpha` with its default noise) with `train.log_every=1` (gradient norms
of the four parts and the balancer's numbers on every step, a host sync each) against
`train.log_every=50`, `--timing-steps` steps, one evaluation at the end, the configurations
alternating for `--repetitions` rounds; the median over rounds of each run's median step time
after `--warmup` steps (the median, not the mean, because the CPU is shared: with
`log_every=50` it is the time of a step that logs nothing, so the cost of the one logged step in
50 is left out of that side). Then one validation pass
(the whole val split, batches of 128 collated beforehand, the untrained model in eval mode) through
`mmreg.train.evaluate` with the task's evaluations as they are (accuracy plus the unimodal ones
giving `accuracy/image_only` and `accuracy/text_only`) against the same pass without those,
alternating, median of `--repetitions` x 10.

    python benchmarks/balance.py                                   # AdamW; seeds 0,1; alpha 0.8; noise on and off
    python benchmarks/balance.py --optimizer sgd --seeds 0,1,2,3 --alpha 0.3,0.8,1.5 --skip-diagnostics
    python benchmarks/balance.py --optimizer sgd --lr 0.1 --alpha '' --no-reference --skip-diagnostics  # no balancer only
    python benchmarks/balance.py --alpha 0.3,0.8,1.5 --noise off   # the alpha sweep
    python benchmarks/balance.py --skip-runs                       # only the diagnostics' cost
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from common import environment, log

import mmreg
from mmreg.components import LoopCallback
from mmreg.plot import read_metrics

METRICS = ("accuracy", "accuracy/image_only", "accuracy/text_only")
# per optimizer: learning rate and weight decay when --lr / --weight-decay are not given. AdamW: mmreg's
# defaults. SGD: OGM-GE's paper's weight decay; its lr 1e-3 is for pretrained-size ResNets, this tiny
# model trained from scratch got 0.1 from a sweep of 0.01, 0.03, 0.1, 0.3 without a balancer (README).
DEFAULTS = {"adamw": {"lr": 1e-3, "weight_decay": 0.01}, "sgd": {"lr": 0.1, "weight_decay": 1e-4}}


class StepClock(LoopCallback):
    """The time between consecutive optimizer steps, leaving out those with an evaluation in them."""

    def __init__(self) -> None:
        self.starts: list[tuple[int, float]] = []
        self.evaluated: set[int] = set()  # index in starts of the step after which an evaluation ran

    def on_step_start(self, step: int) -> None:
        self.starts.append((step, time.perf_counter()))

    def on_eval(self, step: int, metrics: dict[str, float], run_dir: Path) -> None:
        self.evaluated.add(len(self.starts) - 1)

    def seconds(self, skip: int = 0) -> list[float]:
        return [
            b[1] - a[1]
            for i, (a, b) in enumerate(zip(self.starts, self.starts[1:]))
            if i >= skip and i not in self.evaluated
        ]


def hyper(args: argparse.Namespace, optimizer: str) -> dict[str, float]:
    """The optimizer's learning rate and weight decay: the options if given, else DEFAULTS."""
    d = DEFAULTS[optimizer]
    return {
        "lr": d["lr"] if args.lr is None else args.lr,
        "weight_decay": d["weight_decay"] if args.weight_decay is None else args.weight_decay,
    }


def experiment(
    args: argparse.Namespace,
    seed: int,
    balance: dict[str, Any] | None,
    steps: int,
    root: Path,
    image_alone: bool = False,
    optimizer: str = "adamw",
    **train: Any,
) -> dict[str, Any]:
    """The run's configuration; ``image_alone``: every caption is "a handwritten digit" (the reference)."""
    cfg: dict[str, Any] = {
        "task": "classification",
        "encoder": {"name": "dual"},
        "fusion": {"name": "concat"},
        "loss": {"ce": {}},
        "dataset": {"name": "digits", **({"caption_names_digit": False} if image_alone else {"caption_accuracy": args.caption_accuracy})},
        "seed": seed,
        "train": {"max_steps": steps, "batch_size": args.batch_size, **hyper(args, optimizer), "device": "cpu", **train},
        "optim": {"name": optimizer, **({"momentum": args.momentum} if optimizer == "sgd" else {})},
        "data": {"num_workers": 0},
        "runs_dir": str(root),
    }
    if balance is not None:
        cfg["balance"] = {"ogm_ge": balance}
    return cfg


def arms(args: argparse.Namespace) -> dict[str, dict[str, Any] | None]:
    out: dict[str, dict[str, Any] | None] = {"none": None}
    for alpha in args.alpha:
        for noise in args.noise:
            start, end = args.modulation_starts, args.modulation_ends
            params = {"alpha": alpha, "noise": noise == "on", "modulation_starts": start, "modulation_ends": end}
            window = "" if start == 0 and end is None else f" epochs {start}-{'end' if end is None else end}"
            out[f"ogm_ge alpha={alpha:g} noise={noise}{window}"] = params
    return out


def one_run(
    args: argparse.Namespace, seed: int, balance: dict[str, Any] | None, root: Path, image_alone: bool = False, optimizer: str = "adamw"
) -> dict[str, Any]:
    clock = StepClock()
    cfg = experiment(args, seed, balance, args.steps, root, image_alone, optimizer, eval_every=args.eval_every)
    summary = mmreg.run(cfg, progress=False, callbacks=[clock])
    rows = read_metrics(Path(summary["run_dir"]) / "metrics.jsonl")
    val = [r for r in rows if r.get("split") == "val"]
    train = [r for r in rows if r.get("split") == "train" and "balance/ogm_ge/coeff_text" in r]
    step_s = clock.seconds(skip=args.warmup)
    out: dict[str, Any] = {
        "last": {k: round(val[-1][k], 4) for k in METRICS},
        "best": {k: round(max(r[k] for r in val), 4) for k in METRICS},
        "first_eval": {"step": val[0]["step"], **{k: round(val[0][k], 4) for k in METRICS}},
        "curve": [[r["step"], *(round(r[k], 3) for k in METRICS)] for r in val],
        "step_ms": round(1000 * statistics.fmean(step_s), 2),
        "median_step_ms": round(1000 * statistics.median(step_s), 2),
    }
    if train:  # what the balancer did: mean coefficients and ratio over the logged steps
        for key in ("coeff_image", "coeff_text", "ratio"):
            out[f"mean_{key}"] = round(statistics.fmean(r[f"balance/ogm_ge/{key}"] for r in train), 4)
    return out


def measure(args: argparse.Namespace, optimizer: str, root: Path) -> dict[str, Any]:
    """Part 1 with one optimizer: every arm on every seed, the summary, the reference on the image alone."""
    runs: dict[str, dict[str, Any]] = {}
    for name, params in arms(args).items():
        runs[name] = {}
        for seed in args.seeds:
            log(f"{optimizer}: {name}, seed {seed}")
            runs[name][str(seed)] = r = one_run(args, seed, params, root, optimizer=optimizer)
            log(f"  last {r['last']}  best {r['best']}  {r['step_ms']} ms/step")
    result: dict[str, Any] = {**hyper(args, optimizer), "runs": runs}
    base = runs["none"]
    summary = {}
    for name, by_seed in runs.items():
        entry: dict[str, Any] = {}
        for which in ("last", "best"):
            entry[which] = {k: round(statistics.fmean(r[which][k] for r in by_seed.values()), 4) for k in METRICS}
        entry["step_ms"] = round(statistics.fmean(r["step_ms"] for r in by_seed.values()), 2)
        entry["median_step_ms"] = round(statistics.fmean(r["median_step_ms"] for r in by_seed.values()), 2)
        if name != "none":
            diffs = {s: by_seed[s]["last"]["accuracy"] - base[s]["last"]["accuracy"] for s in by_seed}
            entry["minus_none"] = {
                which: {k: round(entry[which][k] - statistics.fmean(r[which][k] for r in base.values()), 4) for k in METRICS}
                for which in ("last", "best")
            }
            entry["minus_none_per_seed"] = {
                s: {k: round(by_seed[s]["last"][k] - base[s]["last"][k], 4) for k in METRICS} for s in by_seed
            }
            entry["wins_on_last_accuracy"] = f"{sum(d > 0 for d in diffs.values())} of {len(by_seed)} seeds"
        summary[name] = entry
    result["summary"] = summary
    if not args.no_reference:
        reference: dict[str, Any] = {}
        for seed in args.seeds:
            log(f"{optimizer}: reference: image alone (captions name no digit), seed {seed}")
            r = one_run(args, seed, None, root, image_alone=True, optimizer=optimizer)
            reference[str(seed)] = {which: r[which]["accuracy"] for which in ("last", "best")} | {"curve": [c[:2] for c in r["curve"]]}
            log(f"  last {r['last']['accuracy']}  best {r['best']['accuracy']}")
        reference["mean"] = {which: round(statistics.fmean(reference[str(s)][which] for s in args.seeds), 4) for which in ("last", "best")}
        result["reference_image_alone"] = reference
    return result


def diagnostics(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    configs = {
        "none, log_every=1": (None, 1),
        "none, log_every=50": (None, 50),
        f"ogm_ge alpha={args.alpha[0]:g} noise=on, log_every=1": ({"alpha": args.alpha[0], "noise": True}, 1),
        f"ogm_ge alpha={args.alpha[0]:g} noise=on, log_every=50": ({"alpha": args.alpha[0], "noise": True}, 50),
    }
    times: dict[str, list[float]] = {name: [] for name in configs}
    for rep in range(args.repetitions):
        for name, (balance, every) in configs.items():
            clock = StepClock()
            cfg = experiment(args, args.seeds[0], balance, args.timing_steps, root, optimizer=args.optimizer[0], log_every=every)
            mmreg.run(cfg, progress=False, callbacks=[clock])
            times[name].append(statistics.median(clock.seconds(skip=args.warmup)))
            log(f"  timing round {rep + 1}: {name}: {1000 * times[name][-1]:.2f} ms/step")
    ms = {name: round(1000 * statistics.median(t), 2) for name, t in times.items()}
    names = list(configs)
    return {
        "step_ms": ms,
        "step_ms_each_round": {name: [round(1000 * t, 2) for t in ts] for name, ts in times.items()},
        "log_every_1_over_50": {
            "none": round(ms[names[0]] / ms[names[1]], 3),
            "ogm_ge": round(ms[names[2]] / ms[names[3]], 3),
        },
        "ogm_ge_over_none_at_log_every_50": round(ms[names[3]] / ms[names[1]], 3),
        "validation_pass": validation_pass(args, root),
    }


def validation_pass(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from mmreg.api import collate_for, prepare
    from mmreg.config import validate
    from mmreg.train import evaluate

    p = prepare(validate(experiment(args, args.seeds[0], None, 1, root, optimizer=args.optimizer[0])))
    collate = collate_for(p)
    samples = list(p.val_split)
    batches = [collate(samples[i : i + 128]) for i in range(0, len(samples), 128)]
    model, device, task = p.model.eval(), torch.device("cpu"), p.model.task
    full = task.evaluations

    def unimodal(evaluation: Any) -> bool:  # the evaluations reporting NAME/image_only and NAME/text_only
        return any(n.endswith(("/image_only", "/text_only")) for n in getattr(evaluation, "names", ()))

    def without(m: Any) -> list[Any]:
        return [e for e in full(m) if not unimodal(e)]

    def timed(unimodal: bool) -> tuple[float, dict[str, float]]:
        if not unimodal:
            task.evaluations = without  # shadows the method on this instance only
        try:
            start = time.perf_counter()
            metrics = evaluate(model, batches, device)
            return time.perf_counter() - start, metrics
        finally:
            task.__dict__.pop("evaluations", None)

    timed(True), timed(False)  # first calls: allocations
    with_u, without_u = [], []
    for _ in range(10 * args.repetitions):
        seconds, metrics_with = timed(True)
        with_u.append(seconds)
        seconds, metrics_without = timed(False)
        without_u.append(seconds)
    assert metrics_with["accuracy"] == metrics_without["accuracy"] and "accuracy/image_only" not in metrics_without
    # the unimodal logits alone (the head over the pooled vectors with the other modality zeroed), per pass
    uni = []
    with torch.no_grad():
        encoded = [(model.encode(b), b) for b in batches]
        for _ in range(10 * args.repetitions):
            start = time.perf_counter()
            for features, b in encoded:
                model.unimodal_logits(features, dict(b))
            uni.append(time.perf_counter() - start)
    with_ms, without_ms = 1000 * statistics.median(with_u), 1000 * statistics.median(without_u)
    return {
        "val_samples": len(samples),
        "batches": len(batches),
        "with_unimodal_ms": round(with_ms, 2),
        "without_unimodal_ms": round(without_ms, 2),
        "with_over_without": round(with_ms / without_ms, 3),
        "unimodal_logits_alone_ms": round(1000 * statistics.median(uni), 2),
    }


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=450, help="optimizer steps per run (default 450: 10 epochs of digits at batch 32)")
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1], help="comma-separated (default 0,1)")
    ap.add_argument("--caption-accuracy", type=float, default=0.8, help="dataset.caption_accuracy (default 0.8)")
    ap.add_argument(
        "--alpha", type=floats, default=[0.8], help="OGM-GE alpha, comma-separated for several (default 0.8); '' for no balancer only"
    )
    ap.add_argument("--noise", type=lambda s: s.split(","), default=["on", "off"], help="OGM-GE's noise: on, off or on,off (default on,off)")
    ap.add_argument("--modulation-starts", type=int, default=0, help="first epoch modulated (default 0)")
    ap.add_argument("--modulation-ends", type=int, default=None, help="last epoch modulated (default: none, to the end)")
    ap.add_argument(
        "--optimizer", type=lambda s: s.split(","), default=["adamw"], help="adamw, sgd or adamw,sgd: each gets all the runs (default adamw)"
    )
    ap.add_argument("--lr", type=float, default=None, help="learning rate of every optimizer (default: AdamW 1e-3, mmreg's; SGD 0.1)")
    ap.add_argument(
        "--weight-decay", type=float, default=None, help="train.weight_decay (default: AdamW 0.01, mmreg's; SGD 1e-4, L2, OGM-GE's paper's)"
    )
    ap.add_argument("--momentum", type=float, default=0.9, help="SGD's momentum (default 0.9)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-every", type=int, default=45, help="steps between evaluations (default 45: one epoch)")
    ap.add_argument("--timing-steps", type=int, default=200, help="steps of each diagnostics-cost run (default 200)")
    ap.add_argument("--repetitions", type=int, default=3, help="rounds of the diagnostics-cost runs (default 3)")
    ap.add_argument("--warmup", type=int, default=10, help="steps left out of each run's step time (default 10)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1, stable on a shared CPU)")
    ap.add_argument("--no-reference", action="store_true", help="leave out the reference runs on the image alone")
    ap.add_argument("--skip-runs", action="store_true", help="only the diagnostics' cost")
    ap.add_argument("--skip-diagnostics", action="store_true", help="only the runs")
    args = ap.parse_args()
    if not 0 < args.caption_accuracy < 1:
        ap.error("--caption-accuracy must lie strictly between 0 and 1 (1 leaves no imbalance to show)")
    if any(o not in DEFAULTS for o in args.optimizer) or len(set(args.optimizer)) != len(args.optimizer):
        ap.error("--optimizer takes adamw, sgd or adamw,sgd")
    if any(n not in ("on", "off") for n in args.noise):
        ap.error("--noise takes on, off or on,off")
    if not 0 <= args.warmup < min(args.steps, args.timing_steps) - 1:
        ap.error("--warmup must be below --steps and --timing-steps")
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"benchmark": "balance"}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        if not args.skip_runs:
            result["optimizers"] = {optimizer: measure(args, optimizer, root) for optimizer in args.optimizer}
        if not args.skip_diagnostics:
            log("diagnostics' cost")
            result["diagnostics"] = diagnostics(args, root)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["settings"] = {k: v for k, v in vars(args).items()}
    result["environment"] = environment()
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
