"""A rich progress bar for training, on stderr so stdout stays clean for --json."""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .train import ProgressFn


@contextmanager
def training_progress(console: Console | None = None, notes: Sequence[str] = ()) -> Iterator[ProgressFn]:
    """Yield an ``on_step`` callback that drives a bar with loss, learning rate, samples/s and ETA,
    after printing ``notes`` (what the run should know about its data) above it."""
    progress = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("lr {task.fields[lr]:.2e}"),
        TextColumn("{task.fields[rate]:.0f} samples/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
    )
    task = progress.add_task("train", total=None, loss=float("nan"), lr=0.0, rate=0.0)

    def on_step(step: int, total: int, stats: dict[str, float]) -> None:
        progress.update(task, completed=step, total=total, loss=stats["loss"], lr=stats["lr"], rate=stats["samples_per_s"])

    for line in notes:
        progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
    with progress:
        yield on_step
