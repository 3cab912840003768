"""Past runs: find, load, compare and re-evaluate run directories (the API behind `mmreg runs` and `mmreg eval`)."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, did_you_mean
from .tables import flatten as flatten  # re-exported from its low-level home

if TYPE_CHECKING:
    from .api import Prepared
    from .components import Sample, Task
    from .config import Experiment
    from .plugins import PluginHost

CHECKPOINTS = ("best", "last", "final")
SPLITS = ("val", "train")
IGNORED_KEYS = frozenset({"name", "runs_dir"})  # differ between any two runs; say nothing about the experiment


@dataclass
class RunRecord:
    """What a run directory says about itself, read from config.toml and summary.json (no torch)."""

    name: str
    path: Path
    created: datetime  # when config.toml was written: the start of the run
    task: str | None  # from summary.json, else config.toml's (None there means "chosen from the losses")
    encoder: str | None
    fusion: str | None
    losses: list[str]
    status: str  # "complete" (summary.json present), "incomplete", or "unreadable" (config.toml broken)
    config: dict[str, Any] = field(default_factory=dict)  # config.toml as written
    summary: dict[str, Any] | None = None
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def metrics(self) -> dict[str, Any]:
        return dict((self.summary or {}).get("metrics") or {})

    @property
    def headline(self) -> dict[str, Any]:
        """The metric a listing shows: the one that decided the run (``summary.json``'s ``best``:
        the task's headline or ``train.metric``) at its best checkpoint; every metric where the
        summary names none."""
        best = (self.summary or {}).get("best") or {}
        if best.get("metric") and best.get("value") is not None:
            return {best["metric"]: best["value"]}
        return self.metrics

    @property
    def steps(self) -> int | None:
        return (self.summary or {}).get("steps")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "created": self.created.isoformat(timespec="seconds"),
            "status": self.status,
            "task": self.task,
            "encoder": self.encoder,
            "fusion": self.fusion,
            "losses": list(self.losses),
            "headline": self.headline,
            "metrics": self.metrics,
            "steps": self.steps,
            "error": self.error,
        }


def task_name(task: Any) -> str | None:
    """The task's name in config.toml: a table's ``name``, or the bare string of the older layout."""
    return task.get("name") if isinstance(task, dict) else task


def is_run(path: Path) -> bool:
    return path.is_dir() and (path / "config.toml").is_file()


def read_run(path: str | Path) -> RunRecord:
    """The record of one run directory; a broken config.toml or summary.json is reported, never raised."""
    path = Path(path)
    config_path = path / "config.toml"
    created = datetime.fromtimestamp(config_path.stat().st_mtime)
    error = None
    try:
        config = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        config, error = {}, f"config.toml is not readable: {exc}"
    summary = None
    summary_path = path / "summary.json"
    if summary_path.is_file():
        try:
            loaded = json.loads(summary_path.read_text(encoding="utf-8"))
            summary = loaded if isinstance(loaded, dict) else None
            if summary is None:
                error = error or "summary.json is not readable: it does not hold a JSON object"
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            error = error or f"summary.json is not readable: {exc}"
    status = "unreadable" if not config and error else ("complete" if summary is not None else "incomplete")

    def name_of(key: str) -> str | None:
        table = config.get(key)
        return table.get("name") if isinstance(table, dict) else None

    losses = config.get("loss")
    return RunRecord(
        name=path.name,
        path=path,
        created=created,
        task=(summary or {}).get("task") or task_name(config.get("task")),
        encoder=name_of("encoder"),
        fusion=name_of("fusion"),
        losses=list(losses) if isinstance(losses, dict) else [],
        status=status,
        config=config,
        summary=summary,
        error=error,
    )


def find_runs(runs_dir: str | Path = "runs") -> list[RunRecord]:
    """Every run directory (one holding config.toml) directly under ``runs_dir``, oldest first."""
    base = Path(runs_dir)
    if base.exists() and not base.is_dir():
        raise ConfigError(f"runs directory {runs_dir} is a file; give the folder runs are in with --runs-dir")
    if not base.is_dir():
        return []
    records = [read_run(p) for p in base.iterdir() if not p.name.startswith(".") and is_run(p)]
    return sorted(records, key=lambda r: (r.created, r.name))


STATUSES = ("complete", "incomplete", "unreadable")


def select_runs(records: Sequence[RunRecord], where: Sequence[str] = (), status: str | None = None, sort: str | None = None) -> list[RunRecord]:
    """The runs whose config.toml has every ``where`` setting ("fusion.name=gated": the dotted key's
    value as TOML writes it, lower-case ``true``/``false``) and ``status``, best first by ``sort``
    (a metric: the checkpoint the run kept where it is the run's headline, in the direction its
    summary declares, else the last evaluation's, higher first; runs without it last), else in order.

    Raises ConfigError for a ``where`` without ``=``, a setting no run has, or an unknown status."""
    if status is not None and status not in STATUSES:
        raise ConfigError(f"--status '{status}' is not a status; use {', '.join(STATUSES)}")
    wanted = []
    for condition in where:
        key, equals, value = condition.partition("=")
        if not equals or not key.strip():
            raise ConfigError(f"--where '{condition}': give KEY=VALUE with a dotted setting, e.g. --where fusion.name=gated")
        wanted.append((key.strip(), value.strip()))
    flat = [flatten(r.config) for r in records]
    known = {k for f in flat for k in f}
    for key, _ in wanted:
        if records and key not in known:
            raise ConfigError(f"--where: no run has the setting '{key}'{did_you_mean(key, sorted(known))}; give a dotted key of config.toml")
    chosen = [
        r for r, f in zip(records, flat, strict=True)
        if (status is None or r.status == status) and all(key in f and _as_text(f[key]) == value for key, value in wanted)
    ]  # fmt: skip
    if sort is None:
        return chosen
    return sorted(chosen, key=lambda r: _sort_key(r, sort))


def _as_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _sort_key(record: RunRecord, metric: str) -> tuple[int, float]:
    best = (record.summary or {}).get("best") or {}
    if best.get("metric") == metric and isinstance(best.get("value"), int | float):
        return 0, -best["value"] if best.get("higher_is_better", True) else best["value"]
    value = record.metrics.get(metric)
    return (0, -value) if isinstance(value, int | float) and not isinstance(value, bool) else (1, 0.0)


def load_run(path_or_name: str | Path, runs_dir: str | Path = "runs") -> RunRecord:
    """One run, by its directory's path or by its name under ``runs_dir``; an unknown run is a ConfigError."""
    if isinstance(path_or_name, RunRecord):
        return path_or_name
    given = Path(path_or_name)
    if given.name == "config.toml" and given.is_file():
        given = given.parent
    candidates = (given, Path(runs_dir) / given)
    for candidate in candidates:
        if is_run(candidate):
            record = read_run(candidate)
            if record.error:  # listing shows such a run; naming it asks for what it cannot give
                raise ConfigError(f"run {candidate}: {record.error}; restore the file or remove the run")
            return record
    for candidate in candidates:
        if candidate.is_dir() and (candidate.parent.resolve() == Path(runs_dir).resolve() or len(given.parts) > 1):
            raise ConfigError(f"{candidate} is not a run directory (it has no config.toml)")
    known = [p.name for p in Path(runs_dir).iterdir() if is_run(p)] if Path(runs_dir).is_dir() else []
    if not known:
        raise ConfigError(f"unknown run '{path_or_name}': no runs in {runs_dir}; give a run directory's path or --runs-dir")
    shown = ", ".join(sorted(known)[:8]) + (f", ... ({len(known)} in all)" if len(known) > 8 else "")
    raise ConfigError(f"unknown run '{path_or_name}' in {runs_dir}{did_you_mean(str(path_or_name), known)} (known: {shown})")


def config_differences(runs: Sequence[RunRecord | str | Path], runs_dir: str | Path = "runs") -> dict[str, list[Any]]:
    """``{dotted.key: [value per run]}`` for every config key whose value is not the same in all runs.

    A key a run lacks (a parameter of a component another run chose) has the value
    None there. ``name`` and ``runs_dir`` are left out.
    """
    flat = [flatten(load_run(r, runs_dir).config) for r in runs]
    keys: dict[str, None] = {}
    for f in flat:
        keys.update(dict.fromkeys(f))
    out: dict[str, list[Any]] = {}
    for key in keys:
        if key in IGNORED_KEYS:
            continue
        values = [f.get(key) for f in flat]
        if any(v != values[0] for v in values[1:]):
            out[key] = values
    return out


def metric_table(runs: Iterable[RunRecord]) -> dict[str, list[Any]]:
    """``{metric: [value per run]}`` over the union of the runs' summary metrics (None where a run lacks one)."""
    runs = list(runs)
    keys: dict[str, None] = {}
    for r in runs:
        keys.update(dict.fromkeys(r.metrics))
    return {k: [r.metrics.get(k) for r in runs] for k in keys}


SUMMARY_FIGURES = ("steps", "final_loss", "train_seconds", "samples_per_second", "val_size", "device")


def weights_for(path: Path, checkpoint: str) -> tuple[Path, str]:
    """(the weights file, the checkpoint actually used): best/last fall back to the final weights of runs without checkpoints."""
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"unknown checkpoint '{checkpoint}'{did_you_mean(checkpoint, CHECKPOINTS)} (use best, last or final)")
    final = path / "model.safetensors"
    if checkpoint == "final":
        if not final.is_file():
            raise ConfigError(f"run {path.name} has no final weights: {final} does not exist (the run did not finish)")
        return final, "final"
    wanted = path / "checkpoints" / checkpoint / "model.safetensors"
    if wanted.is_file():
        return wanted, checkpoint
    if not (path / "checkpoints").is_dir() and final.is_file():
        return final, "final"
    raise ConfigError(
        f"run {path.name} has no '{checkpoint}' weights: {wanted} does not exist"
        + ("; try --checkpoint final" if final.is_file() else "")
    )


def check_eval(path: str | Path, split: str, checkpoint: str, runs_dir: str | Path = "runs") -> tuple[Path, Path, str]:
    """What ``evaluate_run`` checks before building anything: (run directory, weights file, checkpoint used)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'{did_you_mean(split, SPLITS)} (use val or train)")
    run_path = load_run(path, runs_dir).path
    weights, used = weights_for(run_path, checkpoint)
    return run_path, weights, used


def rebuild_run(run_path: Path, weights: Path, host: PluginHost | None = None) -> Prepared:
    """Build a run's model exactly as the run built it (PEFT strategy included) and load ``weights``.

    Raises ConfigError when the rebuilt data or model no longer fit what the run saved.
    """
    p = rebuild_start(run_path, host)
    load_weights(p, run_path, weights)
    return p


def rebuild_start(run_path: Path, host: PluginHost | None = None) -> Prepared:
    """A run's model as the run built it before its first step (seeded as the run was: the
    pretrained weights it loaded, its initialised heads); ConfigError when the rebuilt data no
    longer have the classes the run saved."""
    from .api import prepare
    from .plugins import load_plugins
    from .recorded import recorded_experiment

    host = host or load_plugins()
    p = prepare(recorded_experiment(run_path, host), host)
    classes_path = run_path / "classes.json"
    if p.classes and classes_path.is_file():
        try:
            saved = json.loads(classes_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"run {run_path.name}: {classes_path} is not readable JSON ({exc}); restore it") from None
        if saved != p.classes:
            raise ConfigError(
                f"run {run_path.name}: the rebuilt dataset's classes differ from its classes.json; "
                f"the dataset plugin no longer builds the data this run trained on"
            )
    return p


def load_weights(p: Prepared, run_path: Path, weights: Path) -> None:
    """Load a run's ``weights`` file into its rebuilt model ``p.model``; ConfigError naming the file
    when it is not safetensors or does not fit (another shape, missing or unexpected tensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    try:
        missing, unexpected = load_model(p.model, str(weights), strict=False)
    except (SafetensorError, OSError) as exc:
        raise ConfigError(f"run {run_path.name}: {weights} is not readable safetensors: {exc}") from None
    except RuntimeError as exc:  # a tensor of another shape: the components have changed since the run
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"run {run_path.name}: {weights} does not fit the rebuilt model ({first})") from None
    if missing or unexpected:
        keys = sorted(missing)[:2] + sorted(unexpected)[:2]
        raise ConfigError(
            f"run {run_path.name}: {weights} does not fit the rebuilt model "
            f"({len(missing)} missing, {len(unexpected)} unexpected tensors, e.g. {', '.join(keys)})"
        )
    return p


EVAL_INFO = ("split", "checkpoint", "size", "weights", "device", "task", "dataset", "described")  # evaluate_run's keys beside the metrics


def evaluation_experiment(run: Experiment, host: PluginHost, *, task: str | None, dataset: str | None, overrides: Sequence[str]) -> Experiment:
    """The run's resolved experiment with another ``task``, ``dataset`` or their parameters
    (``overrides``: ``task.KEY=VALUE``, ``dataset.KEY=VALUE``) swapped in for evaluation, resolved and
    checked as a run of it would be, before anything is built.

    Raises ConfigError for an override of anything else (the model stays the run's), and whatever a
    run would be refused for: an unknown name, a bad parameter (a template without ``{c}``), a
    dataset without the fields the task reads."""
    from .api import check_components, resolve
    from .config import apply_flags, apply_overrides, to_file_layout, validate

    outside = [item for item in overrides if not item.partition("=")[0].strip().startswith(("task.", "dataset."))]
    if outside:
        raise ConfigError(f"--set {outside[0]}: mmreg eval sets only task.* and dataset.* (the model is the run's, as it trained); drop it")
    raw = apply_overrides(apply_flags(to_file_layout(run), {"task": task, "dataset": dataset}), overrides)
    if task is not None and task != run.task.name:  # nothing trains: losses that read the run's head say nothing here
        from .api import declared
        from .tasks import HEAD_INPUTS

        heads = [name for name in raw["loss"] if getattr(declared(host.registry("losses").get(name).factory), "needs", frozenset()) & HEAD_INPUTS]
        if len(heads) == len(raw["loss"]):
            raise ConfigError(
                f"task '{task}' scores the fusion's shared space, which the run's losses ({', '.join(heads)}) never train: "
                f"they read only its head; evaluate a run trained with a contrastive loss too"
            )
        raw["loss"] = {name: table for name, table in raw["loss"].items() if name not in heads}
    exp = resolve(validate(raw), host)
    check_components(exp, host)
    return exp


def evaluation_parts(p: Prepared, exp: Experiment, split: str, host: PluginHost) -> tuple[Task, Sequence[Sample]]:
    """The task and the ``split`` samples of ``evaluation_experiment``'s ``exp``, beside the rebuilt
    run ``p``, whose model, encoder preprocessing and weights stay as they are: nothing is retrained.
    Where ``exp`` keeps the run's own task with its parameters, that task is used, its trained head
    included, on the other data, whose classes must then be the run's.

    Raises ConfigError for another task with a head (none was trained for it) or other classes,
    IncompatibleParts for a dataset without the fields the task reads, DataError for unusable samples."""
    from .api import loss_needs
    from .badimages import check_mode
    from .data import require_samples, without_bad
    from .images import parse_colour
    from .tasks import check_task

    name = exp.task.name
    data = host.registry("datasets").build(exp.dataset.name, exp.dataset.params, seed=exp.seed)
    own = exp.task == p.exp.task
    evaluator = p.task if own else host.registry("tasks").build(name, exp.task.params, settings=exp.eval)
    evaluator.name = name
    check_task(name, evaluator, host, loss_needs(exp, host), exp.dataset.name, frozenset(data.fields))
    if own and p.classes and data.classes != p.classes:
        raise ConfigError(
            f"dataset '{exp.dataset.name}' has other classes than the run's head was trained on "
            f"({', '.join(map(str, (data.classes or [])[:4]))}... against {', '.join(map(str, p.classes[:4]))}...); evaluate a dataset with the run's classes"
        )
    if not own and evaluator.build_head(p.model.fusion.out_dim, data, p.model.encoder) is not None:
        raise ConfigError(
            f"task '{name}' reads a head trained for the run's own task and data; mmreg eval --task, --dataset and --set "
            f"evaluate only tasks that build no head (zero-shot evaluation; mmreg list tasks)"
        )
    mode = check_mode(len(data.split(split)), exp.data.full_check_max)
    samples, _ = without_bad(data, exp.dataset.name, split, exp.data.skip_bad, parse_colour(exp.data.background), mode)
    require_samples(samples, exp.dataset.name, split)
    return evaluator, samples


def evaluate_run(
    path: str | Path,
    split: str = "val",
    checkpoint: str = "best",
    device: str = "auto",
    *,
    runs_dir: str | Path = "runs",
    batch_size: int | None = None,
    host: PluginHost | None = None,
    task: str | None = None,
    dataset: str | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Rebuild a run's model exactly as the run built it, load its weights and evaluate one split.

    ``checkpoint`` is ``best``, ``last`` (``checkpoints/<name>/model.safetensors``;
    runs without checkpoints fall back to the final weights) or ``final``
    (``model.safetensors``). ``split="train"`` evaluates the training split without
    augmentation. ``task``, ``dataset`` and ``overrides`` (``task.KEY=VALUE``,
    ``dataset.KEY=VALUE``) evaluate the run's model with another task or data set instead of its
    own, retraining nothing (``evaluation_experiment``, checked before anything is built, and
    ``evaluation_parts``), e.g. a zero-shot task on a labelled data set.
    Returns the metrics of ``mmreg.train.evaluate`` plus ``EVAL_INFO``: ``split``, ``checkpoint``
    (the one actually loaded), ``size``, ``weights``, ``device``, ``task``, ``dataset`` and
    ``described`` (the task's ``describe()``: retrieval's protocol and scoring; {} for none).
    """
    run_path, weights, used = check_eval(path, split, checkpoint, runs_dir)

    from .api import resolve
    from .data import Collate, make_loader, resolve_workers
    from .recorded import recorded_experiment
    from .plugins import load_plugins
    from .train import evaluate, pick_device

    torch_device = pick_device(device)
    host = host or load_plugins()
    swapped = None
    if task is not None or dataset is not None or overrides:
        run = resolve(recorded_experiment(run_path, host), host)
        swapped = evaluation_experiment(run, host, task=task, dataset=dataset, overrides=overrides)
    p = rebuild_run(run_path, weights, host)
    exp, model, evaluator = p.exp, p.model, p.task
    samples = p.val_split if split == "val" else p.train_split  # the bare split: no augmentation
    if swapped is not None:
        exp = swapped
        evaluator, samples = evaluation_parts(p, exp, split, host)
        model.task = evaluator  # the evaluation pass reads the model's task
    model.to(torch_device)

    loader = make_loader(
        samples,  # type: ignore[arg-type]
        Collate(model.encoder, evaluator),
        batch_size or exp.train.eval_batch_size,
        shuffle=False,
        seed=exp.seed,
        num_workers=resolve_workers(exp.data.num_workers, torch_device),
        pin_memory=torch_device.type == "cuda",
        split=split,
        max_unreadable=exp.data.max_unreadable,
    )
    metrics = evaluate(model, loader, torch_device)
    if swapped is None and split == "val":  # the run's own evaluation sets, as it scored them while training
        metrics.update(_set_metrics(p, host, torch_device, batch_size))
    return {
        **metrics,
        "split": split,
        "checkpoint": used,
        "size": len(samples),
        "weights": str(weights),
        "device": str(torch_device),
        "task": evaluator.name,
        "dataset": exp.dataset.name,
        "described": evaluator.describe(),  # how the metrics were computed (retrieval: the protocol and scoring)
    }


def _set_metrics(p: Prepared, host: PluginHost, device: Any, batch_size: int | None) -> dict[str, float]:
    """Each of the run's evaluation sets (``[eval_sets.NAME]``) scored with its weights, as ``NAME/METRIC``."""
    from .data import Collate, make_loader
    from .evalsets import score_sets, set_experiments, set_parts

    size = batch_size or p.exp.train.eval_batch_size
    sets = [
        (name, task, make_loader(samples, Collate(p.model.encoder, task), size, shuffle=False, seed=p.exp.seed))  # type: ignore[arg-type]
        for name, task, samples in set_parts(p, set_experiments(p.exp, host), host)
    ]
    return score_sets(p.model, sets, device)


def benchmark_record(result: Mapping[str, Any], run: str, host: PluginHost) -> dict[str, Any]:
    """An ``evaluate_run`` result as CLIP_benchmark writes its results JSON: ``{"dataset", "model",
    "pretrained", "task", "metrics"}``, with the run's name as ``model`` and the checkpoint loaded
    as ``pretrained``. ``task`` is the benchmark's name where the task class declares one
    (``Task.benchmark``, e.g. ``zeroshot_classification``), else the task's registered name."""
    from .tasks import task_class

    declared = task_class(host.registry("tasks"), result["task"]).benchmark
    return {
        "dataset": result["dataset"],
        "model": run,
        "pretrained": result["checkpoint"],
        "task": declared or result["task"],
        "metrics": {k: v for k, v in result.items() if k not in EVAL_INFO},
    }


__all__ = [
    "EVAL_INFO",
    "RunRecord",
    "benchmark_record",
    "config_differences",
    "evaluate_run",
    "evaluation_experiment",
    "evaluation_parts",
    "find_runs",
    "flatten",
    "load_run",
    "metric_table",
    "read_run",
    "rebuild_run",
]
