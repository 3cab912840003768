"""`mmreg caption`: captions a trained captioning run writes for image files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .runs import AsJson, RunArg, RunsDir
from .state import state


def caption_command(
    run: RunArg,
    images: Annotated[list[Path], typer.Argument(help="Image files to caption.", show_default=False)],
    beams: Annotated[int | None, typer.Option(help="Beam width; 1 is greedy (default: the run's eval.num_beams).", show_default=False)] = None,
    prompt: Annotated[str | None, typer.Option(help="Text every caption starts with (default: the run's eval.prompt).", show_default=False)] = None,
    checkpoint: Annotated[str, typer.Option(help="Weights to use: best, last or final (as for `mmreg eval`).")] = "best",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    runs_dir: RunsDir = Path("runs"),
    as_json: AsJson = False,
) -> None:
    """Print the caption a trained captioning run generates for each image."""
    from ..captions import caption_images

    results = caption_images(
        run, images, beams=beams, prompt=prompt, checkpoint=checkpoint, device=device, runs_dir=runs_dir, host=state.host()
    )
    if as_json:
        typer.echo(json.dumps(results))
        return
    for item in results:
        typer.echo(f"{item['image']}: {item['caption']}")
