"""`mmreg export`: write a run's model in its libraries' own formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .runs import AsJson, RunArg, RunsDir
from .state import state


def export_command(
    run: RunArg,
    out_dir: Annotated[Path, typer.Argument(help="New directory to write into (must not exist).", show_default=False)],
    checkpoint: Annotated[str, typer.Option(help="Weights to export: best, last or final (as for `mmreg eval`).")] = "best",
    runs_dir: RunsDir = Path("runs"),
    as_json: AsJson = False,
) -> None:
    """Export a run: the encoder with adapters merged (transformers / timm formats), the rest as safetensors + JSON."""
    from ..export import export_run

    result = export_run(run, out_dir, checkpoint=checkpoint, runs_dir=runs_dir, host=state.host())
    if as_json:
        typer.echo(json.dumps(result))
        return
    merged = f", adapters merged: {', '.join(result['merged_adapters'])}" if result["merged_adapters"] else ""
    typer.echo(f"exported {result['encoder']} from {result['run']} ({result['checkpoint']} weights{merged}) to {result['out_dir']}")
