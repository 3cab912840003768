"""`mmreg wise` and `mmreg soup`: runs made in weight space from other runs (mmreg.weightspace)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from .runs import AsJson, RunArg, RunsDir
from .state import state

CheckpointOpt = Annotated[str, typer.Option(help="Weights to start from: best, last or final (as for `mmreg eval`).")]
MetricOpt = Annotated[str | None, typer.Option(help="Metric that chooses, e.g. a set's noisy/recall@1 \\[default: the run's deciding metric].", show_default=False)]
NameOpt = Annotated[str | None, typer.Option(help="Name of the new run directory, written beside the first run.", show_default=False)]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]


def wise_command(
    run: RunArg,
    alphas: Annotated[str, typer.Option(help="Mixing weights to score, comma-separated, each in [0, 1].")] = ",".join(f"{i / 10:g}" for i in range(11)),
    alpha: Annotated[float | None, typer.Option(help="Write this α's weights \\[default: the best by --metric].", show_default=False)] = None,
    metric: MetricOpt = None,
    checkpoint: CheckpointOpt = "best",
    name: NameOpt = None,
    runs_dir: RunsDir = Path("runs"),
    device: DeviceOpt = "auto",
    as_json: AsJson = False,
) -> None:
    """WiSE-FT: mix a run's starting and fine-tuned weights, (1 - α)·start + α·fine-tuned, score every α
    on the validation split and the run's evaluation sets, and write the chosen α as a new run."""
    from ..errors import ConfigError
    from ..weightspace import wise

    try:
        grid = [float(a) for a in alphas.split(",") if a.strip()]
    except ValueError:
        raise ConfigError(f"--alphas '{alphas}': give numbers in [0, 1] separated by commas, e.g. 0,0.5,1") from None
    result = wise(run, alphas=grid, alpha=alpha, metric=metric, checkpoint=checkpoint, name=name, runs_dir=runs_dir, device=device, host=state.host())
    if as_json:
        typer.echo(json.dumps(result))
        return
    _table(f"WiSE-FT of {run}: α mixes the starting (0) and fine-tuned (1) weights", result["rows"], "alpha", result["metric"])
    typer.echo(f"wrote α = {result['alpha']:g} ({result['metric']}) as {result['run_dir']} (and wise.png)")


def soup_command(
    runs: Annotated[list[str] | None, typer.Argument(help="Runs of one architecture: names under --runs-dir or directory paths.", show_default=False)] = None,
    from_study: Annotated[Path | None, typer.Option(help="Use every finished trial run of this study directory (mmreg search).", show_default=False)] = None,
    uniform: Annotated[bool, typer.Option("--uniform", help="Write the uniform soup instead of the greedy one.")] = False,
    metric: MetricOpt = None,
    checkpoint: CheckpointOpt = "best",
    name: NameOpt = None,
    runs_dir: RunsDir = Path("runs"),
    device: DeviceOpt = "auto",
    as_json: AsJson = False,
) -> None:
    """Model soups: the uniform mean of the runs' weights and the greedy soup (ingredients by held-out
    metric, each kept only if it improves the soup), scored and written as a new run."""
    from ..errors import ConfigError
    from ..history import find_runs
    from ..weightspace import soup

    chosen = list(runs or [])
    if from_study is not None:
        trials = from_study / "trials"
        if not trials.is_dir():
            raise ConfigError(f"--from-study {from_study}: no trials/ directory; give the study directory mmreg search printed")
        chosen += [str(r.path) for r in find_runs(trials) if r.complete]
    result = soup(chosen, greedy=not uniform, metric=metric, checkpoint=checkpoint, name=name, runs_dir=runs_dir, device=device, host=state.host())
    if as_json:
        typer.echo(json.dumps(result))
        return
    rows = [*result["ingredients"], {"run": "uniform soup", **result["uniform"]}]
    if result["greedy"] is not None:
        rows.append({"run": f"greedy soup ({len(result['kept'])} kept)", **result["greedy"]})
    _table("soup ingredients and soups", rows, "run", result["metric"])
    typer.echo(f"wrote the {'greedy' if result['greedy'] is not None else 'uniform'} soup as {result['run_dir']}")


def _table(title: str, rows: list[dict[str, Any]], first: str, metric: str) -> None:
    from rich.console import Console
    from rich.table import Table

    sets = dict.fromkeys(k.split("/")[0] for k in rows[0] if "/" in k and not k.startswith("ema/") and k != metric)
    same = metric.rpartition("/")[2]
    shown = [metric, *(f"{s}/{same}" if f"{s}/{same}" in rows[0] else next(k for k in rows[0] if k.startswith(f"{s}/")) for s in sets)]
    table = Table(title=title, title_justify="left")
    for col in (first, *shown):
        table.add_column(col, justify="left" if col == first else "right")
    for row in rows:
        table.add_row(f"{row[first]:g}" if isinstance(row[first], float) else str(row[first]), *(f"{row.get(k, float('nan')):.4f}" for k in shown))
    Console().print(table)
