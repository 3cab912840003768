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
    adapters: Annotated[
        str, typer.Option(help="merged: folded into the encoder's weights; peft: the base weights, each tower's adapters in peft's format under adapters/.")
    ] = "merged",
    runs_dir: RunsDir = Path("runs"),
    as_json: AsJson = False,
) -> None:
    """Export a run: the encoder (transformers / timm formats) with adapters merged or as peft folders, the rest as safetensors + JSON."""
    from ..export import export_run

    result = export_run(run, out_dir, checkpoint=checkpoint, runs_dir=runs_dir, host=state.host(), adapters=adapters)
    if as_json:
        typer.echo(json.dumps(result))
        return
    merged = f", adapters merged: {', '.join(result['merged_adapters'])}" if result["merged_adapters"] else ""
    merged += f", adapters as peft folders: {', '.join(result['adapter_folders'])}" if result["adapter_folders"] else ""
    typer.echo(f"exported {result['encoder']} from {result['run']} ({result['checkpoint']} weights{merged}) to {result['out_dir']}")
