"""`mmreg eval` and `mmreg runs list|show|compare`: inspect, compare and re-evaluate past runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..tables import format_value
from .state import state

if TYPE_CHECKING:
    from ..history import RunRecord

runs_app = typer.Typer(help="Inspect and compare past runs (run directories).", no_args_is_help=True)

RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Directory holding the run directories.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print as JSON.")]
RunArg = Annotated[str, typer.Argument(help="A run: its name under --runs-dir, or the path of its directory.", show_default=False)]



def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _console() -> Any:
    from rich.console import Console

    return Console()


def _headline(record: RunRecord) -> str:
    if record.status != "complete":
        return record.status
    return "  ".join(f"{k} {format_value(v)}" for k, v in record.headline.items()) or "-"


# -- mmreg eval ----------------------------------------------------------------


def eval_command(
    run: RunArg,
    split: Annotated[str, typer.Option(help="Split to evaluate: val, or train (without augmentation).")] = "val",
    checkpoint: Annotated[
        str,
        typer.Option(help="Weights to load: best or last (checkpoints/<name>/; the final weights when a run has no checkpoints), or final."),
    ] = "best",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    batch_size: Annotated[
        int | None, typer.Option(help="Evaluation batch size (default: the run's train.eval_batch_size).", show_default=False)
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    as_json: AsJson = False,
    results: Annotated[
        Path | None,
        typer.Option(help="Also write here the task's results file (e.g. VQA's official [{question_id, answer}]); tasks without one refuse it.", show_default=False),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(help="Evaluate with this task instead of the run's, retraining nothing: e.g. a zero-shot task on a labelled --dataset (mmreg list tasks).", show_default=False),
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Evaluate on this dataset instead of the run's (mmreg list datasets).", show_default=False)] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="A parameter of the evaluation's task or dataset: task.KEY=VALUE or dataset.KEY=VALUE; repeatable."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Also write the metrics here as CLIP_benchmark's results JSON: {dataset, model, pretrained, task, metrics}.", show_default=False),
    ] = None,
) -> None:
    """Rebuild a run's model, load its weights and evaluate it on a split, with its own task and dataset or others."""
    from ..errors import ConfigError
    from ..history import EVAL_INFO, benchmark_record, check_eval, evaluate_run
    from ..runs import check_destination, write_json

    run_path, _, _ = check_eval(run, split, checkpoint, runs_dir)  # a wrong name fails before plugins load
    if results is not None and (task or dataset or set_):
        raise ConfigError("--results writes the run's own task's results file; drop --task, --dataset and --set, or --results")
    for flag, path in (("--output", output), ("--results", results)):
        if path is not None:  # a file that could not be written fails before the evaluation, not after
            check_destination(path.parent, f"{flag} folder", flag)
    result = evaluate_run(
        run_path, split, checkpoint, device, runs_dir=runs_dir, batch_size=batch_size, host=state.host(),
        task=task, dataset=dataset, overrides=set_ or [],
    )  # fmt: skip
    if output is not None:
        write_json(output, benchmark_record(result, run_path.name, state.host()))
    if results is not None:
        from ..predict import task_results

        write_json(results, task_results(run_path, split, checkpoint=checkpoint, device=device, runs_dir=runs_dir, host=state.host()))
    if as_json:
        typer.echo(json.dumps(result))
        return
    from rich.table import Table

    note = "" if result["checkpoint"] == checkpoint else f" (the run has no '{checkpoint}' checkpoint)"
    console = _console()
    console.print(f"task {result['task']} on the {result['split']} split of dataset {result['dataset']}, run {run_path.name}: {result['size']} samples, on {result['device']}")
    console.print(f"weights: {result['weights']}, {result['checkpoint']}{note}")
    if result["described"].get("protocol"):
        console.print(f"scored: {result['described']['protocol']}", markup=False, highlight=False)
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if key not in EVAL_INFO:
            table.add_row(key, format_value(value))
    console.print(table)


# -- mmreg runs list / show / compare ------------------------------------------


@runs_app.command("list")
def list_runs(
    runs_dir: RunsDir = Path("runs"),
    where: Annotated[
        list[str] | None, typer.Option(help="Only runs with this setting, KEY=VALUE as in config.toml (e.g. fusion.name=gated); repeatable.", show_default=False)
    ] = None,
    status: Annotated[str | None, typer.Option(help="Only runs with this status: complete, incomplete or unreadable.", show_default=False)] = None,
    sort: Annotated[str | None, typer.Option(help="Sort by this metric, best first (the run's kept checkpoint for its headline).", show_default=False)] = None,
    as_json: AsJson = False,
) -> None:
    """Every run under the runs directory, oldest first, with its parts and headline metrics."""
    from ..history import find_runs, select_runs

    records = select_runs(find_runs(runs_dir), where or (), status, sort)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in records]))
        return
    console = _console()
    if not records:
        console.print(f"no runs in {runs_dir}")
        return
    from rich.table import Table

    table = Table(title=f"runs in {runs_dir}", title_justify="left")
    for col, justify in (
        ("name", "left"), ("created", "left"), ("task", "left"), ("encoder", "left"), ("fusion", "left"),
        ("losses", "left"), ("metrics", "left"), ("steps", "right"),
    ):  # fmt: skip
        table.add_column(col, justify=justify, style="bold" if col == "name" else None)  # type: ignore[arg-type]
    for r in records:
        table.add_row(
            r.name,
            r.created.strftime("%Y-%m-%d %H:%M"),
            r.task or "-",
            r.encoder or "-",
            r.fusion or "-",
            "+".join(r.losses) or "-",
            _headline(r),
            format_value(r.steps),
        )
    console.print(table)


def _files(path: Path) -> list[dict[str, Any]]:
    files = [p for p in sorted(path.rglob("*")) if p.is_file() and not p.name.endswith(".tmp")]
    return [{"path": str(p.relative_to(path)), "size": p.stat().st_size} for p in files]


def _highlights(config: dict[str, Any]) -> dict[str, Any]:
    from ..history import flatten

    flat = flatten(config)
    keys = ["task", "task.name", *(k for k in flat if k.startswith("task.") and k != "task.name"), "seed", "encoder.name", "fusion.name", "peft.name", "dataset.name", "model.dim"]
    keys += [k for k in flat if k.startswith(("loss.", "augment.", "balance."))]
    keys += [f"train.{k}" for k in ("epochs", "max_steps", "batch_size", "lr", "weight_decay", "device")]
    return {k: flat[k] for k in keys if k in flat}


@runs_app.command("show")
def show_run(run: RunArg, runs_dir: RunsDir = Path("runs"), as_json: AsJson = False) -> None:
    """One run: its configuration highlights, summary metrics and the files it holds."""
    from ..history import load_run

    record = load_run(run, runs_dir)
    data = {
        **record.to_dict(),
        "highlights": _highlights(record.config),
        "config": record.config,
        "summary": record.summary,
        "files": _files(record.path),
    }
    if as_json:
        typer.echo(json.dumps(data, default=str))
        return
    from rich.table import Table

    console = _console()
    console.print(f"[bold]run {record.name}[/bold]  ({record.status}, created {data['created']})  {record.path}")
    config = Table(title="configuration", title_justify="left")
    config.add_column("setting")
    config.add_column("value")
    for key, value in data["highlights"].items():
        config.add_row(key, format_value(value))
    console.print(config)
    if record.summary is not None:
        summary = Table(title="summary", title_justify="left")
        summary.add_column("metric")
        summary.add_column("value", justify="right")
        for key, value in record.metrics.items():
            summary.add_row(key, format_value(value))
        best = record.summary.get("best")
        if isinstance(best, dict) and best.get("value") is not None:
            summary.add_row(f"best {best.get('metric')}", f"{format_value(best['value'])} (step {format_value(best.get('step'))})")
        for key, value in record.summary.items():
            if key not in ("metrics", "run_dir") and not isinstance(value, dict | list):
                summary.add_row(f"[dim]{key}[/dim]", format_value(value))
        console.print(summary)
    else:
        console.print("no summary.json: the run did not finish")
    files = Table(title="files", title_justify="left")
    files.add_column("file")
    files.add_column("size", justify="right")
    for f in data["files"]:
        files.add_row(f["path"], _size(f["size"]))
    console.print(files)


@runs_app.command("compare")
def compare_runs(
    runs: Annotated[list[str], typer.Argument(help="Two or more runs: names under --runs-dir or directory paths.", show_default=False)],
    runs_dir: RunsDir = Path("runs"),
    group_by: Annotated[
        list[str] | None, typer.Option("--group-by", help="Group runs by these dotted settings (repeatable); default: every setting but the seed.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Write a PNG of the training loss and the headline metric of every run or group against steps.", show_default=False)
    ] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the grouped table as Markdown (mean ± std), ready to paste.")] = False,
    csv: Annotated[bool, typer.Option("--csv", help="Print the grouped table as CSV: one row per group and metric.")] = False,
    as_json: AsJson = False,
) -> None:
    """Runs side by side: the settings that differ, then every metric. Runs that differ only in the
    seed form a group: per metric the mean, standard deviation and 95% t interval at each run's best
    checkpoint, and between two groups a verdict on the headline metric (see README: Comparing runs)."""
    from ..errors import ConfigError
    from ..groups import compare_groups, group_runs
    from ..history import load_run

    if len(runs) < 2:
        raise ConfigError("compare needs at least two runs, e.g. mmreg runs compare RUN_A RUN_B")
    if sum((markdown, csv, as_json)) > 1:
        raise ConfigError("give one of --markdown, --csv and --json")
    if plot is not None:
        from ..runs import check_destination

        check_destination(plot.parent, "plot folder", "--plot")
    records = [load_run(r, runs_dir) for r in runs]
    groups = group_runs(records, group_by or ())
    compared = compare_groups(groups)
    if plot is not None:
        _plot_groups(groups, compared, plot)
    if markdown or csv:
        typer.echo(_grouped_text(groups, compared, "markdown" if markdown else "csv"))
    elif group_by or any(len(g.runs) > 1 for g in groups):
        _print_groups(groups, compared, as_json)
    else:
        _print_runs(records, runs_dir, as_json)


def _print_runs(records: list[RunRecord], runs_dir: Path, as_json: bool) -> None:
    """One column per run: the settings that differ, every metric (the best bold), summary figures."""
    from ..history import SUMMARY_FIGURES, config_differences, metric_table

    differences = config_differences(records, runs_dir)
    metrics = metric_table(records)
    figures = {k: [(r.summary or {}).get(k) for r in records] for k in SUMMARY_FIGURES}
    figures = {k: v for k, v in figures.items() if any(x is not None for x in v)}
    if as_json:
        data = {
            "runs": [r.name for r in records],
            "paths": [str(r.path) for r in records],
            "status": [r.status for r in records],
            "differences": differences,
            "metrics": metrics,
            "summary": figures,
        }
        typer.echo(json.dumps(data, default=str))
        return
    from rich.table import Table

    table = Table(title="settings that differ, then metrics", title_justify="left")
    table.add_column("")
    for r in records:
        table.add_column(r.name if r.complete else f"{r.name} ({r.status})", justify="right")
    for key, values in differences.items():
        table.add_row(key, *(format_value(v) for v in values))
    if not differences:
        table.add_row("[dim](same settings)[/dim]", *("" for _ in records))
    table.add_section()
    for key, values in metrics.items():
        present = [v for v in values if isinstance(v, int | float)]
        best = max(present) if len(present) > 1 and key != "final_loss" else None
        table.add_row(key, *(f"[bold]{format_value(v)}[/bold]" if best is not None and v == best else format_value(v) for v in values))
    table.add_section()
    for key, values in figures.items():
        table.add_row(f"[dim]{key}[/dim]", *(format_value(v) for v in values))
    _console().print(table)


def _cell(spread: dict[str, Any] | None) -> str:
    if spread is None:
        return "-"
    if spread["std"] is None:
        return f"{spread['mean']:.4g}"
    return f"{spread['mean']:.4g} ± {spread['std']:.2g}"


def _print_groups(groups: list[Any], compared: dict[str, Any], as_json: bool) -> None:
    """Groups side by side: per metric mean ± std [95% interval] at the checkpoint each run kept
    (and at its last evaluation in the JSON); between two groups the verdict on the headline."""
    if as_json:
        typer.echo(json.dumps(compared, default=str))
        return
    from rich.table import Table

    table = Table(title="groups (runs differing only in the seed): mean ± std [95% interval] at each run's best checkpoint", title_justify="left")
    table.add_column("")
    for i, group in enumerate(groups):
        unfinished = [f"{r.name} {r.status}" for r in group.runs if not r.complete]
        table.add_column(
            f"group {i + 1} ({compared['groups'][i]['label']}): {len(group.complete)} runs" + (f" (not averaged: {', '.join(unfinished)})" if unfinished else ""),
            justify="right",
        )
    for key in groups[0].settings:
        table.add_row(key, *(format_value(g.settings[key]) for g in groups))
    table.add_section()
    for metric in compared["metrics"]:
        cells = []
        for row in compared["groups"]:
            s = row["metrics"].get(metric, {}).get("best")
            interval = f" [{s['low']:.4g}, {s['high']:.4g}]" if s is not None and s["low"] is not None else ""
            cells.append(_cell(s) + interval)
        table.add_row(metric, *cells)
    console = _console()
    console.print(table)
    decided = compared["verdict"]
    if decided is not None:
        interval = f" [{decided['low']:+.4g}, {decided['high']:+.4g}]" if decided["low"] is not None else ""
        console.print(
            f"group 2 vs group 1 on {decided['metric']}: {decided['difference']:+.4g}{interval} ({decided['method']}): {decided['says']}",
            markup=False, highlight=False,
        )  # fmt: skip


def _grouped_text(groups: list[Any], compared: dict[str, Any], form: str) -> str:
    """The grouped table as Markdown (a column per group, mean ± std and the run count) or as CSV
    (a row per group and metric: settings, runs, mean, std, low, high at the best checkpoint)."""
    import csv as csv_module
    import io

    metrics = compared["metrics"]
    if form == "markdown":
        header = ["", *(f"{row['label']} (n={len(g.complete)})" for g, row in zip(groups, compared["groups"], strict=True))]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for metric in metrics:
            cells = [_cell(row["metrics"].get(metric, {}).get("best")) for row in compared["groups"]]
            lines.append("| " + " | ".join([metric, *cells]) + " |")
        return "\n".join(lines)
    out = io.StringIO()
    writer = csv_module.writer(out, lineterminator="\n")
    writer.writerow(["group", "runs", "metric", "n", "mean", "std", "low", "high"])
    for group, row in zip(groups, compared["groups"], strict=True):
        for metric in metrics:
            s = row["metrics"].get(metric, {}).get("best") or {}
            writer.writerow([row["label"], " ".join(r.name for r in group.runs), metric, *(s.get(k, "") for k in ("n", "mean", "std", "low", "high"))])
    return out.getvalue().rstrip("\n")


def _plot_groups(groups: list[Any], compared: dict[str, Any], out: Path) -> None:
    from ..plot import plot_comparison

    metric = compared["headline"]["metric"] if compared["headline"] else next(iter(compared["metrics"]), "loss")
    labelled = [(row["label"], [r.path / "metrics.jsonl" for r in g.complete]) for g, row in zip(groups, compared["groups"], strict=True)]  # unfinished runs: not averaged
    plot_comparison(labelled, metric, out)
    typer.echo(f"wrote {out} (legend: {'; '.join(label for label, _ in labelled)})", err=True)


__all__ = ["eval_command", "runs_app"]
