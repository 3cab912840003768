"""`mmreg run`: compose components into one training run and print its result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .state import state

# Options shared with the commands that read an experiment as `mmreg run` does (`mmreg data inspect`).
ExperimentArg = Annotated[
    Path | None, typer.Argument(help="Experiment file (.toml/.yaml) or a run directory to rerun.", show_default=False)
]
EncoderOpt = Annotated[str | None, typer.Option(help="Encoder name (see `mmreg list encoders`).", show_default=False)]
AugmentOpt = Annotated[list[str] | None, typer.Option(help="Augmenter name; repeatable.", show_default=False)]
DatasetOpt = Annotated[str | None, typer.Option(help="Dataset name.", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override any setting: dotted.key=value, e.g. fusion.heads=8; repeatable."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
TrackOpt = Annotated[
    list[str] | None,
    typer.Option(help="Log to a tracker: tensorboard, mlflow, wandb or aim (offline, in the run directory); repeatable.", show_default=False),
]


def run_command(
    experiment: ExperimentArg = None,
    encoder: EncoderOpt = None,
    fusion: Annotated[str | None, typer.Option(help="Fusion head name.", show_default=False)] = None,
    loss: Annotated[
        list[str] | None, typer.Option(help="Loss name, optionally NAME:WEIGHT; repeatable.", show_default=False)
    ] = None,
    augment: AugmentOpt = None,
    balance: Annotated[
        list[str] | None,
        typer.Option(help="Balancer name (a gradient hook before the optimizer step, e.g. ogm_ge); repeatable, applied in order.", show_default=False),
    ] = None,
    peft: Annotated[str | None, typer.Option(help="PEFT strategy name.", show_default=False)] = None,
    dataset: DatasetOpt = None,
    task: Annotated[
        str | None,
        typer.Option(help="{tasks} \\[default: the task the losses imply, Task.default_for].", show_default=False),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the training split.", show_default=False)] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimizer steps.", show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option(help="Training batch size.", show_default=False)] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.", show_default=False)] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or mps.", show_default=False)] = None,
    precision: Annotated[str | None, typer.Option(help="auto (bf16 on Ampere+ GPUs, fp16 on older GPUs, fp32 on the CPU), fp32, fp16 or bf16 (autocast; fp16 adds loss scaling).", show_default=False)] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the run in this directory from its last checkpoint.", show_default=False)
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.", show_default=False)] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Run once per seed, e.g. 0,1,2 or 0-4: one run directory each, recorded as one group.", show_default=False)
    ] = None,
    repeat: Annotated[int | None, typer.Option(help="Run N times, seeds from the experiment's seed upward (as --seeds).", show_default=False)] = None,
    set_: SetOpt = None,
    runs_dir: Annotated[Path | None, typer.Option(help="Where run directories are created \\[default: runs].", show_default=False)] = None,
    name: Annotated[str | None, typer.Option(help="Run name (the run directory's name).", show_default=False)] = None,
    track: TrackOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train and evaluate one experiment; defaults: clip + gated + infonce on shapes."""
    from ..api import is_main_process, run
    from ..config import load_experiment
    from ..errors import ConfigError
    from ..seeds import parse_seeds, run_seeds

    flags = {
        "encoder": encoder,
        "fusion": fusion,
        "loss": loss,
        "augment": augment,
        "balance": balance,
        "peft": peft,
        "dataset": dataset,
        "task": task,
        "epochs": epochs,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "lr": lr,
        "device": device,
        "precision": precision,
        "seed": seed,
        "runs_dir": str(runs_dir) if runs_dir is not None else None,
        "name": name,
        "track": track,
    }
    repeated = {"seeds": seeds, "repeat": repeat}
    if resume is not None:
        given = [k for k, v in {**flags, **repeated}.items() if v not in (None, [])] + (["EXPERIMENT"] if experiment else []) + (["--set"] if set_ else [])
        if given:
            raise ConfigError(f"--resume continues the saved experiment as it was; drop {', '.join(given)}")
        summary = run(None, host=state.host(), progress=True, resume=resume)
    else:
        exp = load_experiment(experiment, flags, set_ or [])
        chosen = parse_seeds(seeds, repeat, exp.seed)
        if chosen is not None:
            result = run_seeds(exp, chosen, host=state.host(), progress=True)
            if is_main_process():  # under a data-parallel launcher the main process reports
                _report_seeds(result, as_json)
            return
        summary = run(exp, host=state.host(), progress=True)
    if not is_main_process():  # under a data-parallel launcher the main process reports
        return
    if as_json:
        typer.echo(json.dumps(summary))
        return
    _print_summary(summary)


def _report_seeds(result: dict, as_json: bool) -> None:
    """The group of runs one per seed: each run's best value, then their mean, spread and interval."""
    if as_json:
        typer.echo(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    head = result["headline"]
    table = Table(title=f"group {result['group']}: {head['metric']} at each run's best checkpoint", title_justify="left")
    for col in ("seed", head["metric"], "run directory"):
        table.add_column(col)
    for seed, summary in zip(result["seeds"], result["runs"], strict=True):
        value = summary["best"]["value"]
        table.add_row(str(seed), "-" if value is None else f"{value:.4f}", summary["run_dir"])
    console.print(table)
    spread = head["best"]
    if spread is not None and spread["std"] is not None:
        console.print(
            f"{head['metric']} over {spread['n']} seeds: {spread['mean']:.4f} ± {spread['std']:.4f} (std), "
            f"95% interval [{spread['low']:.4f}, {spread['high']:.4f}]; compare groups with mmreg runs compare",
            highlight=False,
        )


def parts_line(parts: dict) -> str:
    """``parameters by part: vision 0 trainable, 1,024 frozen; ...``, from ``mmreg.optim.part_counts``."""
    return "parameters by part: " + "; ".join(
        f"{name} {c['trainable_parameters']:,} trainable, {c['frozen_parameters']:,} frozen" for name, c in parts.items()
    )


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    m, best = summary["metrics"], summary["best"]
    texts = summary.get("val_texts", summary["val_size"])
    images = summary.get("val_images", texts)
    over = f"{images} images" + (f" and {texts} texts" if texts != images else "")
    classes = f", {summary['classes']} classes" if summary.get("classes") else ""
    console.print(f"validation {summary['task']} over {over}{classes}:", highlight=False)
    table = Table()
    for col, justify in (("metric", "left"), ("last", "right"), ("best checkpoint", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for key, value in m.items():
        headline = key == best["metric"]
        kept = "" if not headline or best["value"] is None else f"{best['value']:.4f} (step {best['step']})"
        table.add_row(f"[bold]{key}[/bold] (headline, {'higher' if best.get('higher_is_better', True) else 'lower'} is better)" if headline else key,
                      f"{value:.4f}", kept)  # fmt: skip
    console.print(table)
    console.print(
        f"{summary['steps']} steps in {summary['train_seconds']:.1f}s ({summary['samples_per_second']:.0f} samples/s "
        f"on {summary['device']} in {summary['precision']}), final loss {summary['final_loss']:.4f}"
    )
    console.print(
        f"trainable parameters: {summary['trainable_parameters']:,} of {summary['parameters']:,} "
        f"({summary['trainable_percent']:.2f}%)"
    )
    if "parts" in summary:  # runs recorded before per-part counts have none
        console.print(parts_line(summary["parts"]), markup=False)
    for split, failed in summary.get("unreadable", {}).items():
        console.print(
            f"{split}: {failed['count']} samples failed to decode while loading and were skipped: {'; '.join(failed['names'])}",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    console.print(f"run directory: {summary['run_dir']}")
