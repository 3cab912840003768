"""`mmreg search`: Optuna over the experiment file's [search] table; a live table of trials, then the best."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .run import JsonOpt, SetOpt, TrackOpt
from .state import state


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def search_command(
    experiment: Annotated[Path, typer.Argument(help="Experiment file with a \\[search] table.", show_default=False)],
    trials: Annotated[int, typer.Option(min=1, help="Trials to add to the study.")] = 20,
    timeout: Annotated[float | None, typer.Option(help="Stop starting trials after this many seconds.", show_default=False)] = None,
    jobs: Annotated[int, typer.Option(min=1, help="Worker processes on this machine (one GPU each when several).")] = 1,
    storage: Annotated[
        str | None,
        typer.Option(help="Optuna RDB URL (e.g. postgresql://...) shared by workers on many machines, or a journal file path \\[default: RUNS_DIR/STUDY/study.journal].", show_default=False),
    ] = None,
    study: Annotated[str | None, typer.Option(help="Study name \\[default: the experiment file's name].", show_default=False)] = None,
    sampler: Annotated[str, typer.Option(help="tpe, random, grid or cmaes.")] = "tpe",
    pruner: Annotated[str, typer.Option(help="median, hyperband, successive-halving or none.")] = "median",
    metric: Annotated[
        str | None, typer.Option(help="Validation metric to optimise \\[default: train.metric, else the task's headline metric].", show_default=False)
    ] = None,
    direction: Annotated[
        str | None, typer.Option(help="maximize or minimize \\[default: the direction the task declares for the metric].", show_default=False)
    ] = None,
    runs_dir: Annotated[Path | None, typer.Option(help="Where the study directory goes \\[default: the file's runs_dir].", show_default=False)] = None,
    heartbeat: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Seconds between heartbeats on an RDB storage \\[default: 10]; a trial silent for twice this is failed and retried. "
            "Refused for a journal file, which has none: a dead worker's trial is failed and retried when a search next opens the study.",
            show_default=False,
        ),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Run every trial once per seed, e.g. 0,1,2 or 0-4 (trials/trial-NNNN-seed-S); its value is their mean. "
            "Only the first seed's run reports to the pruner.",
            show_default=False,
        ),
    ] = None,
    repeat: Annotated[int | None, typer.Option(help="Run every trial N times, seeds from the experiment's seed upward (as --seeds).", show_default=False)] = None,
    set_: SetOpt = None,
    track: TrackOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search plugins and their parameters with Optuna; every trial is a full run, poor ones pruned."""
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from ..search import check_budget, execute, plan_search
    from ..seeds import parse_seeds

    check_budget(trials, jobs, timeout)
    written = parse_seeds(seeds, None, 0)  # --repeat counts from the experiment's seed, known once plan_search reads it

    console = Console(stderr=as_json)
    table = Table(title=f"trials of {study or experiment.stem}", title_justify="left")
    for col in ("#", "state", "value", "steps", "params", "reason"):
        table.add_column(col, overflow="fold")

    def add(row: dict[str, Any]) -> None:
        params = ", ".join(f"{k}={_cell(v)}" for k, v in row["params"].items())
        table.add_row(str(row["number"]), row["state"], _cell(row["value"]), _cell(row["steps"]), params, row["reason"] or "")

    plan = plan_search(
        experiment, study=study, storage=storage, sampler=sampler, pruner=pruner, metric=metric, direction=direction,
        runs_dir=runs_dir, overrides=set_ or [], heartbeat=heartbeat, host=state.host(), plugins=state.extra_plugins,
        track=track or [], seeds=written, repeat=repeat,
    )  # fmt: skip: every refusal comes before the table shows
    with Live(table, console=console, refresh_per_second=2, transient=as_json):
        summary = execute(plan, trials, timeout=timeout, jobs=jobs, on_trial=add)
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        _print_best(console, summary)
        _print_importances(console, summary["importances"])
    if summary["interrupted"]:
        sys.exit(130)
    if summary["best"] is None and summary["states"].get("fail"):
        sys.exit(1)  # every trial that ran failed: the reasons are in the table


def _print_best(console: Any, summary: dict[str, Any]) -> None:
    states = ", ".join(f"{n} {s}" for s, n in sorted(summary["states"].items()))
    console.print(f"study {summary['study']}: {summary['trials']} trials ({states}) in {summary['storage']}")
    best = summary["best"]
    if best is None:
        failed = [r for r in summary["rows"] if r["state"] == "fail"]
        why = f"; trial {failed[0]['number']} failed: {failed[0]['reason']}" if failed else " yet"
        console.print(f"no trial completed{why}", markup=False)
        return
    metric = summary.get("metric") or "value"
    console.print(f"best: trial {best['number']}, {metric} [bold]{best['value']:.4f}[/bold] ({summary['direction']})")
    seeds = best.get("seeds")
    if seeds:
        each = ", ".join(f"seed {s} {v:.4f}" for s, v in zip(seeds, best["values"], strict=True))
        console.print(f"  the mean of its runs: {each}")
    for key, value in best["params"].items():
        console.print(f"  {key} = {value!r}")
    again = f" --seeds {','.join(str(s) for s in seeds)}" if seeds else ""
    console.print(f"rerun it with: mmreg run {best['experiment']}{again}")
    console.print(f"study directory: {summary['study_dir']}")


def _print_importances(console: Any, importances: dict[str, Any]) -> None:
    """What mattered: each parameter's PED-ANOVA (the ranking) and fANOVA importance, or why there is none."""
    from rich.table import Table

    if not importances["params"]:
        console.print(f"no parameter importances: {importances['reason']}", markup=False)
        return
    table = Table(title="what mattered", title_justify="left")
    for col in ("parameter", "PED-ANOVA", "fANOVA"):
        table.add_column(col, justify="left" if col == "parameter" else "right")
    for row in importances["params"]:
        table.add_row(row["name"], f"{row['ped_anova']:.3f}", "-" if row["fanova"] is None else f"{row['fanova']:.3f}")
    console.print(table)
