"""`mmreg data inspect`: show what the model receives from a data set, without training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .run import AugmentOpt, DatasetOpt, EncoderOpt, ExperimentArg, JsonOpt, SetOpt, parts_line
from .state import state

data_app = typer.Typer(help="Look at a data set as a run reads it.", no_args_is_help=True)


@data_app.command("inspect")
def inspect_command(
    experiment: ExperimentArg = None,
    encoder: EncoderOpt = None,
    dataset: DatasetOpt = None,
    augment: AugmentOpt = None,
    set_: SetOpt = None,
    split: Annotated[str, typer.Option(help="Split to show: train (augmented, as at the first epoch) or val.")] = "train",
    n: Annotated[int, typer.Option("--n", help="Samples to show, the first of the split in order.")] = 16,
    out: Annotated[Path, typer.Option(help="Folder for report.json, samples.png and batch.safetensors.")] = Path("data-inspect"),
    as_json: JsonOpt = False,
) -> None:
    """Read the data set exactly as `mmreg run` would and write what the model receives into --out."""
    from ..config import load_experiment
    from ..inspection import inspect_data

    flags = {"encoder": encoder, "dataset": dataset, "augment": augment}
    exp = load_experiment(experiment, flags, set_ or [])
    report = inspect_data(exp, split=split, n=n, out=out, host=state.host())
    if as_json:
        typer.echo(json.dumps(report))
        return
    _print_report(report, out)


def _print_report(report: dict, out: Path) -> None:
    from rich.console import Console

    console = Console(soft_wrap=True)  # lines name files: never break them
    console.print(f"samples: train {report['samples']['train']}, val {report['samples']['val']}")
    for split, problems in report["unusable"].items():
        if problems:
            console.print(f"{split}: {len(problems)} unusable, first: {problems[0]}", markup=False, highlight=False)
    for split, images in report["images"].items():
        modes = ", ".join(f"{m} {c}" for m, c in images["modes"].items())
        console.print(f"{split} images: {modes}; sizes {images['sizes']['min']} to {images['sizes']['max']}", markup=False)
    for split, fit in report["text"].items():
        if fit is not None:
            console.print(
                f"{split} {fit['field']}s: {fit['min_tokens']}-{fit['max_tokens']} tokens (median {fit['median_tokens']}), "
                f"{fit['truncated']} truncated at {fit['max_length']}, {fit['merged']} of {fit['distinct']} distinct "
                f"identical after truncation, {fit['unknown_tokens']} unknown tokens in {fit['with_unknown']} {fit['field']}s",
                markup=False,
            )
    console.print(parts_line(report["parameters"]), markup=False)
    for split, dup in report["duplicates"].items():
        console.print(f"{split} duplicates: " + ", ".join(f"{k} {v}" for k, v in dup.items()), markup=False)
    console.print(f"wrote {out / 'report.json'}, {out / 'samples.png'}, {out / 'batch.safetensors'}", markup=False)
