"""The pre-training check of unusable images at 1k and 100k files: full decode vs headers only.

Writes ``N`` synthetic JPEG files (``--side`` pixels square, a smooth gradient with
noise, as photos compress) and a ``pairs.csv`` listing them in a temporary folder,
builds the ``files`` dataset on it, then times ``Dataset.check`` (every image
decoded, the check of splits up to ``data.full_check_max``) and
``Dataset.check_headers`` (headers read by a thread pool, the check of larger
splits) on the same files, each once from a warm page cache (after one untimed
header pass), alternating full/headers per repetition. Reports seconds,
microseconds per file and the full/headers ratio per size, so the growth of each
with N shows side by side. Prints ONE JSON object as the last line of stdout.

    python benchmarks/scale_check.py                         # 1k and 100k files of 32 px, about 2-4 minutes on 2 cores
    python benchmarks/scale_check.py --sizes 1000 --side 224  # full decode cost grows with the pixels, headers do not
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import common


def write_files(folder: Path, n: int, side: int, seed: int) -> Path:
    """``n`` JPEGs (a few distinct contents, written as distinct files) and pairs.csv naming them."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    payloads = []
    for k in range(16):
        pixels = (ramp[None, :, None] * 0.5 + ramp[:, None, None] * 0.3 + rng.normal(0, 12, (side, side, 3)) + k * 7) % 256
        path = folder / "template.jpg"
        Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)
        payloads.append(path.read_bytes())
    rows = ["image_path,caption"]
    for i in range(n):
        (folder / f"{i}.jpg").write_bytes(payloads[i % len(payloads)])
        rows.append(f"{i}.jpg,picture {i}")
    (folder / "pairs.csv").write_text("\n".join(rows) + "\n")
    return folder / "pairs.csv"


def measure(n: int, side: int, repetitions: int, seed: int) -> dict[str, float]:
    from mmreg.plugins import load_plugins

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        csv = write_files(Path(tmp), n, side, seed)
        common.log(f"{n} files of {side} px written in {time.perf_counter() - started:.1f}s")
        dataset = load_plugins().registry("datasets").build("files", {"train": str(csv), "val": str(csv)}, seed=seed)
        assert dataset.check_headers("train") == []  # untimed: warms the page cache for both
        full, headers = [], []
        for _ in range(repetitions):
            for name, fn, into in (("full", dataset.check, full), ("headers", dataset.check_headers, headers)):
                t = time.perf_counter()
                assert fn("train") == []
                into.append(time.perf_counter() - t)
                common.log(f"  {n} files: {name} {into[-1]:.2f}s")
    full_s, headers_s = statistics.median(full), statistics.median(headers)
    return {
        "files": n,
        "side_px": side,
        "full_decode_s": round(full_s, 3),
        "headers_s": round(headers_s, 3),
        "full_decode_us_per_file": round(1e6 * full_s / n, 1),
        "headers_us_per_file": round(1e6 * headers_s / n, 1),
        "ratio_full_over_headers": round(full_s / headers_s, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,100000", help="file counts, comma-separated (default 1000,100000)")
    ap.add_argument("--side", type=int, default=32, help="image side in pixels (default 32: the 100k case stays small on disk)")
    ap.add_argument("--repetitions", type=int, default=3, help="timed passes of each check per size (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(json.dumps({"benchmark": "scale_check", "cpus": len(os.sched_getaffinity(0)),
                      **check_figures([int(s) for s in args.sizes.split(",")], args.side, args.repetitions, args.seed),
                      **common.environment()}))  # fmt: skip


def check_figures(sizes: list[int], side: int, repetitions: int, seed: int) -> dict[str, Any]:
    """The check at each size and how each mode grows from the first size to the last."""
    results = [measure(n, side, repetitions, seed) for n in sizes]
    growth = {}
    if len(results) >= 2:
        first, last = results[0], results[-1]
        scale = last["files"] / first["files"]
        growth = {
            "files_ratio": scale,
            "full_decode_time_ratio": round(last["full_decode_s"] / first["full_decode_s"], 1),
            "headers_time_ratio": round(last["headers_s"] / first["headers_s"], 1),
        }
    return {"results": results, "growth": growth}


if __name__ == "__main__":
    main()
