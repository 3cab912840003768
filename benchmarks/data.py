"""How much of a training step waits for data, and how fast the data pipeline alone runs per worker count.

Part 1, the share of step time spent waiting for data: ``Trainer.fit`` runs with its
loader wrapped so that the time blocked in ``next(batch)`` is summed, over the steps
after ``--warmup``; ``wait_share`` = that sum / the window's wall time (the rest is
the host-to-device copy, on-device normalisation, forward, backward and the
optimizer). Two models, each at the default config (``data.num_workers=auto``) and
with ``--workers`` workers:

- ``tiny``: the clip tiny preset on the shapes data set (32 px, drawn in memory), batch 32;
- ``vit_b32``: a CLIP ViT-B/32-sized model (random init from a config: 224 px, patch 32,
  width 768, 12 layers, 12 heads, projection 512; text tower of the same shape) on
  ``--files`` JPEGs of 256x320 px written to a temporary folder (the ``files`` data set:
  decoded, resized and cropped to 224 px per sample), batch ``--vit-batch``. On a CPU a
  step takes seconds, so this part runs ``--vit-steps`` steps only.

Part 2, the pipeline alone: samples/s of the ViT-B/32 loader (decode, resize and crop in
uint8, tokenise; no model) at 0, 1 and 2 workers, over ``--passes`` passes of the files
after one untimed pass (worker start); plus the bytes of one batch's pixels as they
cross the worker boundary (uint8) and as float32 would.
Prints progress to stderr and ONE JSON object as the last line of stdout.

    python benchmarks/data.py                      # about 3-6 minutes on 2 CPU cores
    python benchmarks/data.py --device cuda --steps 200 --vit-steps 50 --vit-batch 256 --files 2048 --workers 8
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import common

VIT_B32 = {
    "image_size": 224, "patch_size": 32, "hidden_size": 768, "layers": 12, "heads": 12, "projection_dim": 512, "max_length": 32,
}  # fmt: skip


def parse_args() -> argparse.Namespace:
    def own(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--workers", type=int, default=2, help="worker count compared with the default (default 2)")
        ap.add_argument("--files", type=int, default=96, help="JPEG files written for the ViT-B/32 runs (default 96)")
        ap.add_argument("--vit-steps", type=int, default=4, help="optimizer steps of the ViT-B/32 runs (default 4, 1 of them warmup)")
        ap.add_argument("--vit-batch", type=int, default=8, help="ViT-B/32 samples per step (default 8)")
        ap.add_argument("--passes", type=int, default=2, help="timed passes over the files per worker count in part 2 (default 2)")
        ap.set_defaults(steps=60, warmup=10)  # the tiny runs: enough steps for a stable share, a minute on a CPU

    args = common.parse_args(__doc__.split("\n\n")[0], own, "measurement")
    return args


class Waiting:
    """The loader, with the seconds spent blocked in ``next`` summed per batch (``waits``)."""

    def __init__(self, loader: Any) -> None:
        self.loader, self.waits = loader, []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)
        while True:
            started = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            self.waits.append(time.perf_counter() - started)
            yield batch


def write_jpegs(folder: Path, n: int, seed: int) -> Path:
    """``n`` 256x320 JPEGs (gradients with noise, distinct per file) and pairs.csv naming them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:320].astype(np.float32)
    rows = ["image_path,caption"]
    for i in range(n):
        a, b = rng.uniform(0.2, 1.0, 2)
        pixels = np.stack([xx * a, yy * b, (xx + yy) * 0.4], axis=-1) + rng.normal(0, 10, (256, 320, 3))
        Image.fromarray((pixels % 256).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)
        rows.append(f"{i}.jpg,a synthetic picture number {i % 17} with {i % 5} stripes")
    (folder / "pairs.csv").write_text("\n".join(rows) + "\n")
    return folder / "pairs.csv"


def experiment(kind: str, args: argparse.Namespace, csv: Path, workers: int | str, steps: int) -> dict[str, Any]:
    common_train = {"max_steps": steps, "device": args.device, "log_every": 1000}
    if kind == "tiny":
        return {
            "seed": args.seed, "dataset": {"name": "shapes", "train_size": 1024, "val_size": 64},
            "train": {**common_train, "batch_size": args.batch_size}, "data": {"num_workers": workers},
        }  # fmt: skip
    return {
        "seed": args.seed, "encoder": {"name": "clip", **VIT_B32}, "model": {"dim": 512},
        "dataset": {"name": "files", "train": str(csv), "val_fraction": 0.1},
        "train": {**common_train, "batch_size": args.vit_batch}, "data": {"num_workers": workers},
    }  # fmt: skip


def wait_share(kind: str, args: argparse.Namespace, csv: Path, workers: int | str, tmp: Path) -> dict[str, Any]:
    """One training run with the loader timed: the share of the timed window spent waiting for batches."""
    from mmreg.api import collate_for, prepare
    from mmreg.config import validate
    from mmreg.data import AugmentedSplit
    from mmreg.results import Metric
    from mmreg.train import Trainer

    steps = args.steps if kind == "tiny" else args.vit_steps
    warmup = args.warmup if kind == "tiny" else 1
    p = prepare(validate(experiment(kind, args, csv, workers, steps)))
    run_dir = Path(tempfile.mkdtemp(dir=tmp))
    trainer = Trainer(
        p.model, AugmentedSplit(p.train_split, p.augmenters, p.exp.seed), collate_for(p), None, p.exp.train,  # type: ignore[arg-type]
        seed=p.exp.seed, run_dir=run_dir, metric=Metric("recall@1"), num_workers=p.exp.data.num_workers,
    )  # fmt: skip
    trainer.evaluate = lambda: {"recall@1": 0.0}  # type: ignore[method-assign]  # not what is measured
    trainer.loader = Waiting(trainer.loader)  # type: ignore[assignment]
    stamps: dict[int, float] = {}

    def on_step(step: int, total: int, stats: dict[str, float]) -> None:
        common.sync(trainer.device)
        stamps[step] = time.perf_counter()

    trainer.fit(on_step)
    window = stamps[steps] - stamps[warmup]
    waited = sum(trainer.loader.waits[warmup:steps])  # batches of steps warmup+1 .. steps (grad_accum 1)
    share = waited / window
    common.log(f"{kind} workers={workers} ({trainer.num_workers}): wait {waited:.3f}s of {window:.3f}s = {share:.1%}")
    return {
        "num_workers": workers,
        "resolved_workers": trainer.num_workers,
        "timed_steps": steps - warmup,
        "step_s": round(window / (steps - warmup), 4),
        "wait_s_per_step": round(waited / (steps - warmup), 4),
        "wait_share": round(share, 4),
    }


def pipeline_alone(args: argparse.Namespace, csv: Path) -> dict[str, Any]:
    """Samples/s of the ViT-B/32 loader alone (no model) per worker count."""
    from mmreg.api import collate_for, prepare
    from mmreg.config import validate
    from mmreg.data import make_loader

    p = prepare(validate(experiment("vit_b32", args, csv, 0, 1)))
    collate = collate_for(p)
    out: dict[str, Any] = {}
    for workers in (0, 1, 2):
        loader = make_loader(p.train_split, collate, 16, shuffle=True, seed=0, num_workers=workers)
        for _ in loader:  # the first pass starts the (persistent) workers: not timed
            pass
        seen, started = 0, time.perf_counter()
        for _ in range(args.passes):  # each pass starts from an empty queue: prefetching cannot hide work
            for batch in loader:
                seen += batch["pixel_values"].shape[0]
        rate = seen / (time.perf_counter() - started)
        common.log(f"pipeline alone, {workers} workers: {rate:.1f} samples/s")
        out[f"samples_per_s_workers_{workers}"] = round(rate, 1)
        del loader  # persistent workers end with it
    pixels = collate([p.train_split[i] for i in range(16)])["pixel_values"]
    out["pixel_dtype"] = str(pixels.dtype).removeprefix("torch.")
    out["batch16_pixel_bytes"] = pixels.numel() * pixels.element_size()
    out["batch16_pixel_bytes_float32"] = pixels.numel() * 4
    return out


def main() -> None:
    args = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mmreg-bench-data-"))
    atexit.register(shutil.rmtree, tmp, True)
    csv = write_jpegs(tmp, args.files, args.seed)
    result: dict[str, Any] = {"benchmark": "data", "device": args.device, "cpus": len(os.sched_getaffinity(0))}
    for kind in ("tiny", "vit_b32"):
        result[kind] = {
            "default": wait_share(kind, args, csv, "auto", tmp),
            f"workers_{args.workers}": wait_share(kind, args, csv, args.workers, tmp),
        }
    result["pipeline_alone_vit_b32"] = pipeline_alone(args, csv)
    result.update(common.environment())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
