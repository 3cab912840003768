"""`mmreg caption`: the short form of `mmreg predict` for a run whose task predicts captions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from .runs import AsJson, RunArg, RunsDir
from .state import state


def caption_command(
    run: RunArg,
    images: Annotated[list[Path], typer.Argument(help="Image files to caption.", show_default=False)],
    beams: Annotated[int | None, typer.Option(help="Beam width; 1 is greedy (default: the run's task.num_beams).", show_default=False)] = None,
    prompt: Annotated[str | None, typer.Option(help="Text every caption starts with (default: the run's task.prompt).", show_default=False)] = None,
    checkpoint: Annotated[str, typer.Option(help="Weights to use: best, last or final (as for `mmreg eval`).")] = "best",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    runs_dir: RunsDir = Path("runs"),
    as_json: AsJson = False,
) -> None:
    """Print the caption a trained run generates for each image: `mmreg predict` with --top-k 1 for
    a task that predicts captions, --beams and --prompt setting its task.num_beams and task.prompt."""
    from ..predict import predict_images

    given = {"num_beams": beams, "prompt": prompt}
    results = predict_images(
        run, images, top_k=1, target="caption", task_params={k: v for k, v in given.items() if v is not None},
        checkpoint=checkpoint, device=device, runs_dir=runs_dir, host=state.host(),
    )  # fmt: skip
    captions: list[dict[str, Any]] = [{"image": item["image"], "caption": item["predictions"][0]["caption"]} for item in results]
    if as_json:
        typer.echo(json.dumps(captions))
        return
    for item in captions:
        typer.echo(f"{item['image']}: {item['caption']}")
