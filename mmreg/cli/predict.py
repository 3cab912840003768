"""`mmreg predict`: a trained run's own prediction for image files (its task's ``predict``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .runs import AsJson, RunArg, RunsDir
from .state import state


def predict_command(
    run: RunArg,
    images: Annotated[list[Path], typer.Argument(help="Image files to predict for.", show_default=False)],
    text: Annotated[list[str] | None, typer.Option("--text", help="What the task reads with the images: a question or caption (one for all, or one per image), or the candidate captions it ranks. Repeatable.", show_default=False)] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Predictions kept per image, best first.")] = 5,
    checkpoint: Annotated[str, typer.Option(help="Weights to use: best, last or final (as for `mmreg eval`).")] = "best",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    runs_dir: RunsDir = Path("runs"),
    as_json: AsJson = False,
) -> None:
    """Print the task's prediction for each image, best first: answers or classes with their
    scores, the best captions among --text, or a generated caption, as the run's task predicts."""
    from ..predict import predict_images

    results = predict_images(
        run, images, texts=text or [], top_k=top_k, checkpoint=checkpoint, device=device, runs_dir=runs_dir, host=state.host()
    )
    if as_json:
        typer.echo(json.dumps(results))
        return
    for item in results:
        shown = ", ".join(f"{next(iter(p.values()))} ({p['score']:.3f})" if "score" in p else str(next(iter(p.values()))) for p in item["predictions"])
        typer.echo(f"{item['image']}: {shown}")
