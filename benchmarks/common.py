"""What both benchmark scripts share: logging to stderr, the timing options, device sync."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import torch


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def parse_args(
    description: str,
    add_own: Callable[[argparse.ArgumentParser], None],
    what: str,
    check: Callable[[argparse.Namespace], str | None] = lambda args: None,
) -> argparse.Namespace:
    """The options every benchmark takes, plus the script's own from ``add_own`` (``check`` returns
    an error message for bad combinations); sets torch's threads."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--steps", type=int, default=200, help="optimizer steps per repetition (default 200)")
    ap.add_argument("--warmup", type=int, default=20, help="steps not timed at the start of each repetition (default 20)")
    ap.add_argument("--repetitions", type=int, default=7, help=f"repetitions of each {what}, alternating (default 7)")
    ap.add_argument("--batch-size", type=int, default=32, help="samples per step (default 32)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads; default 1, which stays stable on a shared CPU (2 threads on a busy 2-core machine "
        "slowed steps 10-70x); 0 keeps torch's own choice",
    )
    ap.add_argument("--seed", type=int, default=0)
    add_own(ap)
    args = ap.parse_args()
    if not 0 <= args.warmup < args.steps:
        ap.error("--warmup must be at least 0 and below --steps")
    problem = check(args)
    if problem:
        ap.error(problem)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def environment() -> dict[str, Any]:
    """Threads and versions, recorded with every figure."""
    import platform

    import accelerate
    import transformers

    return {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "accelerate": accelerate.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
