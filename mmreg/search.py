"""`mmreg search`: Optuna over an experiment file's ``[search]`` space; every trial is a full `mmreg.run`.

The pruner reads the validation metric at each evaluation (a `LoopCallback.on_eval` passed to `mmreg.run(callbacks=...)`);
the study lives in Optuna's own storages: a journal file in the runs directory by
default (safe for several processes on one machine), or any RDB URL (PostgreSQL)
shared by workers on many machines. A killed worker's trial is failed and retried with
the same parameters on both: on an RDB by Optuna's heartbeats (``RetryHeartbeatStaleTrialCallback``);
on a journal, which has none (Optuna 5.1's ``JournalStorage`` is no ``storages._heartbeat.BaseHeartbeat``;
optuna/optuna#6615 asks for one), by the owner each trial records (host, pid, process start time),
checked when a search opens the study (``reclaim_dead_trials``).
"""

from __future__ import annotations

import copy
import math
import multiprocessing
import os
import socket
import sys
import time
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .components import LoopCallback
from .config import apply_flags, apply_overrides, read_file, to_file_layout, validate, write_file
from .errors import ConfigError, MmregError, TrainingInterrupted, did_you_mean
from .space import Space

if TYPE_CHECKING:
    import optuna

    from .config import Experiment
    from .results import Metric

    from .plugins import PluginHost

SAMPLERS = ("tpe", "random", "grid", "cmaes")
PRUNERS = ("median", "hyperband", "successive-halving", "none")
DIRECTIONS = ("maximize", "minimize")
JOURNAL = "study.journal"
HEARTBEAT = 10  # seconds between an RDB worker's heartbeats unless --heartbeat says otherwise
MAX_RETRY = 3  # retries of a trial whose worker died, on every storage (RetryHeartbeatStaleTrialCallback's max_retry)
UNOWNED_AFTER = 60.0  # seconds after which a running journal trial that names no owner is taken as abandoned
TrialFn = Callable[[dict[str, Any]], None]


def _pick(what: str, value: str, known: Sequence[str]) -> str:
    if value not in known:
        raise ConfigError(f"unknown {what} '{value}'{did_you_mean(value, known)} (known: {', '.join(known)})")
    return value


@dataclass
class Plan:
    """Everything one search worker needs: the space, the study and where trials write."""

    space: Space
    study: optuna.Study
    study_dir: Path
    metric: str | None
    storage: str
    experiment: str
    settings: dict[str, Any]  # plan_search's keywords, for --jobs workers to plan the same search
    reclaimed: list[int] = field(default_factory=list)  # trials failed on opening because their worker had died
    seeds: list[int] | None = None  # each trial runs once per seed, its value their mean; None: once, with the experiment's seed

    @property
    def host(self) -> PluginHost:
        return self.space.host


def is_rdb(url: str | None) -> bool:
    """Whether ``--storage`` names an RDB (a URL with a scheme) rather than a journal file."""
    return url is not None and "://" in url


def open_storage(url: str | None, study_dir: Path, heartbeat: int | None = None) -> tuple[Any, str]:
    """Optuna storage and its printable address: ``url`` if it has a scheme (an RDB, with heartbeats
    every ``heartbeat`` seconds, default ``HEARTBEAT``, and stale trials retried), else a journal file
    (default: in ``study_dir``), which has no heartbeats and ignores ``heartbeat`` (``plan_search`` refuses it).

    Raises ConfigError when the database cannot be reached.
    """
    import optuna

    if url is None or not is_rdb(url):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        from .runs import check_destination

        path = Path(url) if url else study_dir / JOURNAL
        check_destination(path.parent, "journal storage folder", "--storage")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path))), str(path)
    heartbeat = HEARTBEAT if heartbeat is None else heartbeat
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = RDBStorage(
                    url,
                    heartbeat_interval=heartbeat,
                    grace_period=2 * heartbeat,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                    engine_kwargs={"pool_pre_ping": True},
                )
            break
        except ImportError as exc:
            raise ConfigError(f"storage {url} needs its database driver; for PostgreSQL: pip install sqlalchemy 'psycopg[binary]'") from exc
        except Exception as exc:  # sqlalchemy's: a refused connection, a bad URL, or workers creating the tables at once
            if attempt < 2:
                time.sleep(1.0 + attempt)  # a worker that lost the race to create Optuna's tables finds them made
                continue
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"storage {url} cannot be opened: {first}; check the URL and that the server runs") from exc
    return storage, url


def make_sampler(name: str, space: Space, seed: int) -> optuna.samplers.BaseSampler:
    """Optuna's TPE (default), random, grid (every choice or step) or CMA-ES (numbers; choices drawn at random)."""
    import optuna

    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """Median (after 2 finished trials; Optuna's default waits for 5), Hyperband, successive halving, or none."""
    import optuna

    return {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1),
        "successive-halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1),
        "none": optuna.pruners.NopPruner,
    }[name]()


def objective_direction(base: Experiment, host: PluginHost, metric: str | None, direction: str | None) -> str:
    """The study's direction: the one the experiment's task declares for the metric (``metric``,
    else ``train.metric``, else the task's headline: ``Task.lower_is_better``), or ``direction``
    where given. Raises ConfigError for a direction that contradicts the declared one."""
    from .results import check_requested, plain
    from .tasks import task_class

    task = task_class(host.registry("tasks"), base.task.name)
    check_requested(task, base.task.name, metric, "--metric", ema=base.train.ema is not None)
    name = metric or base.train.metric or task.headline
    if name is None:  # the task's first metric, known once a trial builds it; its direction is checked then
        return direction or "maximize"
    declared = "minimize" if plain(name) in task.lower_is_better else "maximize"
    if direction is not None and direction != declared:
        better = "lower" if declared == "minimize" else "higher"
        raise ConfigError(f"task '{base.task.name}' declares {name} better {better}, so a search must {declared} it; drop --direction {direction}")
    return declared


def plan_search(
    experiment: str | Path,
    *,
    study: str | None = None,
    storage: str | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    metric: str | None = None,
    direction: str | None = None,
    runs_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    heartbeat: int | None = None,
    host: PluginHost | None = None,
    plugins: Sequence[str] = (),
    track: Sequence[str] = (),
    seeds: Sequence[int] | None = None,
    repeat: int | None = None,
) -> Plan:
    """Read and check the experiment and its space, then open (or create) the study; no trial runs.

    ``metric`` (default: the experiment's ``train.metric``, else its task's headline) is what every
    trial's run keeps its best checkpoint by, reports to the pruner and returns as the trial's value;
    ``direction`` defaults to the one the task declares for it (``Task.lower_is_better``).
    ``heartbeat`` (seconds, default ``HEARTBEAT``) is for an RDB ``storage``; a journal has no heartbeats,
    so there it is refused, and opening the study fails and retries the trials of dead workers instead
    (``reclaim_dead_trials``; their numbers are ``Plan.reclaimed``). ``seeds`` (or ``repeat`` seeds from the
    experiment's own ``seed`` upward; ``mmreg.seeds.parse_seeds``) run every trial once per seed (``objective``).

    Raises ConfigError (and the other typed errors of mmreg.errors) for any bad input.
    """
    import optuna

    from .api import resolve
    from .plugins import load_plugins
    from .runs import check_runs_dir
    from .tracking import check_trackers, open_study

    _pick("sampler", sampler, SAMPLERS)
    _pick("pruner", pruner, PRUNERS)
    if direction is not None:
        _pick("direction", direction, DIRECTIONS)
    if heartbeat is not None and not is_rdb(storage):
        raise ConfigError(
            "--heartbeat needs an RDB --storage (postgresql://...): a journal file has no heartbeats, "
            "a dead worker's trial is failed and retried when a search next opens the study; drop --heartbeat"
        )
    host = host or load_plugins(plugins)
    raw = read_file(experiment)
    table = raw.pop("search", None)
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"'search' in {experiment} must be a table of dimensions")
    raw = apply_overrides(apply_flags(raw, {"track": track}), overrides)
    if runs_dir is not None:
        raw["runs_dir"] = str(runs_dir)
    base = resolve(validate(raw), host)
    direction = objective_direction(base, host, metric, direction)
    space = Space(table or {}, raw, host)
    chosen = trial_seeds(seeds, repeat, base.seed, space)
    check_runs_dir(base.runs_dir)
    check_trackers(base.track)
    make_sampler(sampler, space, seed=base.seed)  # a grid without steps fails here, before any file exists
    name = study or Path(experiment).stem
    study_dir = (Path(base.runs_dir) / name).absolute()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # trials are reported by mmreg, reasons included
    store, address = open_storage(storage, study_dir, heartbeat)
    opened = optuna.create_study(study_name=name, storage=store, direction=direction, load_if_exists=True)
    if opened.direction.name.lower() != direction:
        raise ConfigError(f"study '{name}' in {address} was made to {opened.direction.name.lower()}, this search would {direction}; use another --study")
    reclaimed = [] if is_rdb(storage) else reclaim_dead_trials(opened, store)  # an RDB's heartbeats do this
    opened.sampler = make_sampler(sampler, space, seed=base.seed + len(opened.trials))  # a rerun draws anew
    opened.pruner = make_pruner(pruner)
    study_dir.mkdir(parents=True, exist_ok=True)
    open_study(base.track, name, study_dir)
    settings = {
        "study": study, "storage": storage, "sampler": sampler, "pruner": pruner, "metric": metric,
        "direction": direction, "runs_dir": runs_dir, "overrides": list(overrides), "heartbeat": heartbeat,
        "plugins": list(plugins), "track": list(track), "seeds": chosen,
    }  # fmt: skip
    return Plan(space, opened, study_dir, metric, address, str(experiment), settings, reclaimed, chosen)


def trial_seeds(seeds: Sequence[int] | None, repeat: int | None, base: int, space: Space) -> list[int] | None:
    """The seeds each trial runs with: ``seeds``, or ``repeat`` seeds from ``base`` upward; None for neither.

    Raises ConfigError as ``mmreg.seeds.parse_seeds`` does (both given, a seed that is not a non-negative
    integer or given twice, ``repeat`` below 1), and when the space searches ``seed`` itself.
    """
    from .seeds import parse_seeds

    chosen = parse_seeds(None if seeds is None else ",".join(str(s) for s in seeds), repeat, base)
    if chosen is not None and any(dim.key == "seed" for dim in space.dims):
        raise ConfigError("the [search] table searches seed, so each trial has its own; drop --seeds/--repeat or the seed dimension")
    return chosen


def _process_runs(pid: int, started: float) -> bool:
    """Whether process ``pid`` runs and is the one that started at ``started`` (psutil's ``create_time``,
    seconds since the epoch, within a second): a later process that reused the pid is not it. psutil
    is installed with accelerate and peft, both dependencies; a zombie (killed, not yet reaped) runs no longer."""
    import psutil

    try:
        process = psutil.Process(pid)
        return abs(process.create_time() - started) < 1.0 and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # ZombieProcess included
        return False
    except psutil.AccessDenied:  # another user's process runs, though its start time cannot be read
        return True


def worker_identity() -> dict[str, Any]:
    """This process as a trial's owner (the ``worker`` user attribute): host name, pid and start time."""
    import psutil

    return {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time()}


def _dead_worker(trial: optuna.trial.FrozenTrial, host: str, now: datetime) -> str | None:
    """Why running ``trial`` has no live worker any more, or None while it may still have one:
    a worker on another host cannot be seen from here, so its trials are left alone."""
    owner = trial.user_attrs.get("worker")
    if owner is None:  # its worker died between Optuna's ask and the objective's first line
        age = (now - trial.datetime_start).total_seconds() if trial.datetime_start else math.inf
        return f"its worker died before recording itself (running {age:.0f} s with no owner)" if age > UNOWNED_AFTER else None
    if owner["host"] != host or _process_runs(owner["pid"], owner["started"]):
        return None
    return f"its worker, pid {owner['pid']} on {owner['host']}, died while running it (found when a search next opened the study)"


def reclaim_dead_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Fail every running trial of ``study`` whose worker on this host no longer runs, with the reason
    as its ``fail_reason``, and enqueue a retry with the same parameters, up to ``MAX_RETRY`` times, as
    Optuna's ``RetryHeartbeatStaleTrialCallback`` does after ``fail_stale_trials`` on an RDB (the retry's
    ``retry_of`` names the trial). Returns the numbers of the trials failed; one that another search
    fails first is its to retry.
    """
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    study_id = storage.get_study_id_from_name(study.study_name)
    host, now = socket.gethostname(), datetime.now()  # Optuna's trial times are naive local ones
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = _dead_worker(trial, host, now)
        if reason is None:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", reason)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:  # another search reclaimed it first
            continue
        template = copy.copy(trial)
        template.user_attrs = {}  # the retry records its own worker, run directory and outcome
        retry(study, template)
        failed.append(trial.number)
    return failed


def objective(plan: Plan) -> Callable[[optuna.Trial], float]:
    """One trial: draw, refuse an impossible combination (pruned, with the reason), run once per seed, report each evaluation.

    Without ``Plan.seeds`` the trial is one run (``trials/trial-NNNN``) and its value that run's best value
    (``summary["best"]["value"]``). With them it runs once per seed (``trials/trial-NNNN-seed-S``, in order) and
    its value is the mean of the runs' best values; only the first seed's run reports to the pruner (so a trial
    is pruned on its first seed alone), the later seeds run without pruning. User attributes: ``run_dir`` (the
    first run's), and with seeds ``seeds``, ``values`` (each finished run's best value) and ``run_dirs``. A run
    whose value is not finite fails the trial (value NaN, with the reason), and the seeds after it do not run.
    """
    import optuna

    from .api import check_components, resolve
    from .tracking import study_track

    def trial_fn(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker_identity())  # first: a journal has no heartbeat to tell it died
        raw = plan.space.draw(trial)
        raw["runs_dir"], raw["name"] = str(plan.study_dir / "trials"), f"trial-{trial.number:04d}"
        raw["track"] = study_track(raw.get("track"), plan.study.study_name, plan.study_dir)  # one tracker run per trial
        if plan.metric:  # the run keeps its best checkpoint by the search's metric
            raw.setdefault("train", {})["metric"] = plan.metric
        try:
            exp = resolve(validate(raw), plan.host)
            check_components(exp, plan.host)
        except MmregError as exc:
            trial.set_user_attr("pruned_reason", str(exc))
            raise optuna.TrialPruned(str(exc)) from exc
        runs = [exp] if plan.seeds is None else [exp.model_copy(update={"seed": s, "name": f"{exp.name}-seed-{s}"}) for s in plan.seeds]
        trial.set_user_attr("experiment", to_file_layout(runs[0]))
        trial.set_user_attr("run_dir", str(plan.study_dir / "trials" / runs[0].name))
        if plan.seeds is not None:
            trial.set_user_attr("seeds", plan.seeds)
        values: list[float] = []
        run_dirs: list[str] = []
        for i, run_exp in enumerate(runs):
            summary = _run_trial(trial, plan, run_exp, first=i == 0)
            value = summary["best"]["value"]  # the best checkpoint's, by the metric the pruner was fed
            run_dirs.append(summary["run_dir"])
            if value is None or not math.isfinite(value):
                seed = "" if plan.seeds is None else f"seed {run_exp.seed}: "
                trial.set_user_attr("fail_reason", f"{seed}{summary['best']['metric']} is {value}")
                return float("nan")
            values.append(value)
            if plan.seeds is not None:
                trial.set_user_attr("values", values)
                trial.set_user_attr("run_dirs", run_dirs)
        return sum(values) / len(values)

    return trial_fn


def _run_trial(trial: optuna.Trial, plan: Plan, exp: Experiment, *, first: bool) -> dict[str, Any]:
    """One run of a trial, its summary returned; the ``first`` run feeds its evaluations to the pruner
    (``PruningReport``) and is the trial's ``run_dir``. Ctrl-C fails the trial and stops the search; bad
    input found while building prunes the draw; anything else fails the trial."""
    import optuna

    from .api import run

    try:
        summary = run(exp, host=plan.host, progress=False, callbacks=[PruningReport(trial, plan)] if first else [])
    except TrainingInterrupted as exc:  # Ctrl-C during training: this trial is failed, the search stops
        trial.set_user_attr("fail_reason", "interrupted")
        raise KeyboardInterrupt from exc
    except KeyboardInterrupt:  # Ctrl-C while the run was being built
        trial.set_user_attr("fail_reason", "interrupted")
        raise
    except optuna.TrialPruned:
        raise
    except MmregError as exc:
        if exc.exit_code != 2:  # diverged: the trial failed
            trial.set_user_attr("fail_reason", str(exc))
            raise
        trial.set_user_attr("pruned_reason", str(exc))  # bad input found while building: this draw cannot run
        raise optuna.TrialPruned(str(exc)) from exc
    except Exception as exc:  # a raising plugin, out of memory: failures are data
        trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        _free_gpu_memory()
    if first:
        trial.set_user_attr("run_dir", summary["run_dir"])
    return summary


class PruningReport(LoopCallback):
    """Reports the validation metric at each evaluation to the trial; stops the run when the pruner says so,
    leaving ``pruned.json`` (step, metric, value, reason) in its run directory."""

    def __init__(self, trial: optuna.Trial, plan: Plan) -> None:
        self.trial, self.plan = trial, plan
        self.metric: Metric | None = None

    def on_metric(self, metric: Metric) -> None:
        """The run's deciding metric: the one reported, and the trial's value; its direction must be the study's."""
        study = self.plan.study.direction.name.lower()
        if metric.direction != study:
            better = "higher" if metric.higher_is_better else "lower"
            raise ConfigError(f"this trial's metric {metric.name} is better {better}, but the study must {study}; use another --study or --metric")
        self.metric = metric
        self.trial.set_user_attr("metric", metric.name)

    def on_eval(self, step: int, metrics: dict[str, float], run_dir: Path) -> None:
        import optuna

        from .runs import write_json

        assert self.metric is not None, "on_metric is called before the first evaluation"
        trial, name = self.trial, self.metric.name
        if trial.user_attrs.get("run_dir") != str(run_dir):
            trial.set_user_attr("run_dir", str(run_dir))
        trial.report(metrics[name], step)
        if trial.should_prune():
            reason = f"pruned by the {type(self.plan.study.pruner).__name__} at step {step}: {name} {metrics[name]:.4f}"
            write_json(run_dir / "pruned.json", {"step": step, "metric": name, "value": metrics[name], "reason": reason})
            trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(reason)


def _free_gpu_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def optimize(plan: Plan, trials: int, timeout: float | None = None, on_trial: TrialFn | None = None) -> bool:
    """Run ``trials`` trials (fewer if ``timeout`` seconds pass) in this process; False if interrupted."""
    callbacks = [lambda study, frozen: on_trial(trial_row(frozen))] if on_trial else []
    try:
        plan.study.optimize(objective(plan), n_trials=trials, timeout=timeout, catch=(Exception,), callbacks=callbacks)
    except KeyboardInterrupt:
        return False
    return True


def _worker(experiment: str, settings: dict[str, Any], trials: int, timeout: float | None, device: str | None) -> None:
    """One `--jobs` worker process: its own GPU when there are several, its share of the trials."""
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    optimize(plan_search(experiment, **settings), trials, timeout)


def search(
    experiment: str | Path,
    *,
    trials: int = 20,
    timeout: float | None = None,
    jobs: int = 1,
    on_trial: TrialFn | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Search the experiment's ``[search]`` space with ``trials`` more trials; return the study summary.

    ``settings`` are ``plan_search``'s keywords (study, storage, sampler, pruner,
    metric, direction, runs_dir, overrides, heartbeat, host, plugins, track, seeds, repeat:
    with ``seeds`` each trial is one run per seed, its value their mean; see ``objective``). Rerunning
    with the same study and storage continues it: ``trials`` more trials run, and the
    retry of a trial whose worker died (failed on opening a journal, by its missing
    heartbeat on an RDB) is one of them, run first. ``jobs`` worker processes share
    the trials (each on its own GPU when several are visible); ``on_trial`` sees
    each finished trial's row. Writes, in the study directory (``RUNS_DIR/STUDY``):
    ``best.toml`` (runnable with `mmreg run`; the best trial's first seed), PNGs of the optimisation history,
    parameter importances and intermediate values, and ``summary.json`` (with ``importances``, ``param_importances``). Raises
    ConfigError for a bad space or setting before any trial.
    """
    check_budget(trials, jobs, timeout)
    return execute(plan_search(experiment, **settings), trials, timeout=timeout, jobs=jobs, on_trial=on_trial)


def check_budget(trials: int, jobs: int, timeout: float | None) -> None:
    """Refuse a search that could run nothing, before any study exists: ConfigError for fewer than
    one trial or worker, or a timeout that is not a positive number of seconds."""
    if trials < 1 or jobs < 1:
        raise ConfigError(f"--trials and --jobs must be at least 1 (got {trials} and {jobs})")
    if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
        raise ConfigError(f"--timeout {timeout}: give a positive number of seconds, or leave it out for no limit")


def execute(plan: Plan, trials: int, *, timeout: float | None = None, jobs: int = 1, on_trial: TrialFn | None = None) -> dict[str, Any]:
    """Run a planned search (see ``search``) and summarise the study; ``on_trial`` first sees the trials
    failed on opening it (``Plan.reclaimed``), then each that finishes."""
    if on_trial:
        for number in plan.reclaimed:
            on_trial(trial_row(plan.study.trials[number]))
    finished = optimize(plan, trials, timeout, on_trial) if jobs == 1 else _run_workers(plan, trials, timeout, jobs, on_trial)
    return summarize(plan, interrupted=not finished)


def _run_workers(plan: Plan, trials: int, timeout: float | None, jobs: int, on_trial: TrialFn | None) -> bool:
    """Start ``jobs`` processes on the study, report trials as they finish; False if interrupted."""
    import torch

    gpus = torch.cuda.device_count()
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    shares = [trials // jobs + (i < trials % jobs) for i in range(jobs)]
    workers = [
        context.Process(target=_worker, args=(plan.experiment, plan.settings, n, timeout, str(i % gpus) if gpus > 1 else None))
        for i, n in enumerate(shares)
        if n
    ]
    for w in workers:
        w.start()
    seen = {t.number for t in plan.study.get_trials(deepcopy=False) if t.state.is_finished()}
    try:
        while any(w.is_alive() for w in workers):
            time.sleep(1.0)
            seen |= _report_new(plan, seen, on_trial)
    except KeyboardInterrupt:  # the workers got the same SIGINT and stop their trials cleanly
        for w in workers:
            w.join(timeout=60)
        return False
    _report_new(plan, seen, on_trial)
    return True


def _report_new(plan: Plan, seen: set[int], on_trial: TrialFn | None) -> set[int]:
    new = [t for t in plan.study.get_trials(deepcopy=False) if t.state.is_finished() and t.number not in seen]
    for t in new:
        if on_trial:
            on_trial(trial_row(t))
    return {t.number for t in new}


def trial_row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """One trial as plain data: number, state, value, params, run directory and the reason it did not complete;
    for a trial over several seeds also its ``seeds``, their ``values`` and ``run_dirs`` (None otherwise)."""
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() if trial.datetime_complete and trial.datetime_start else None
    retried = trial.system_attrs.get("failed_trial")
    reason = trial.user_attrs.get("pruned_reason") or trial.user_attrs.get("fail_reason")
    if reason is None and trial.state.name == "FAIL":
        reason = "no reason recorded: its worker was killed (no heartbeat) or lost"
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "value": trial.value if trial.values else None,
        "params": trial.params,
        "steps": max(trial.intermediate_values) if trial.intermediate_values else None,
        "seconds": seconds,
        "run_dir": trial.user_attrs.get("run_dir"),
        "seeds": trial.user_attrs.get("seeds"),
        "values": trial.user_attrs.get("values"),
        "run_dirs": trial.user_attrs.get("run_dirs"),
        "reason": reason,
        "retry_of": retried,
    }


def summarize(plan: Plan, *, interrupted: bool = False) -> dict[str, Any]:
    """The study as plain data, what mattered included (``importances``: ``param_importances``);
    writes best.toml, the PNGs and summary.json into the study directory."""
    from .runs import write_json

    study, study_dir = plan.study, plan.study_dir
    trials = study.get_trials(deepcopy=False)
    rows = [trial_row(t) for t in trials]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    summary: dict[str, Any] = {
        "study": study.study_name,
        "storage": plan.storage,
        "study_dir": str(study_dir),
        "direction": study.direction.name.lower(),
        "metric": next((t.user_attrs["metric"] for t in trials if "metric" in t.user_attrs), plan.metric),
        "trials": len(rows),
        "states": counts,
        "interrupted": interrupted,
        "best": None,
        "rows": rows,
    }
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if complete:
        best = study.best_trial
        exp = validate(copy.deepcopy(best.user_attrs["experiment"]))
        exp = exp.model_copy(update={"name": "best", "runs_dir": str(study_dir)})
        write_file(exp, study_dir / "best.toml")
        summary["best"] = {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "run_dir": best.user_attrs.get("run_dir"),
            "seeds": best.user_attrs.get("seeds"),
            "values": best.user_attrs.get("values"),
            "experiment": str(study_dir / "best.toml"),
        }
    summary["importances"] = param_importances(study)
    summary["plots"] = write_plots(study, study_dir)
    write_json(study_dir / "summary.json", summary)
    return summary


IMPORTANCE_METHOD = (
    "PED-ANOVA (Watanabe et al. 2023; Optuna's PedAnovaImportanceEvaluator): how differently a parameter is "
    "distributed in the top 10% of complete trials, by the study's direction, than in all of them; "
    "fANOVA (Hutter et al. 2014; Optuna's FanovaImportanceEvaluator, seed 0): its share of the objective's variance, "
    "direction-blind, for parameters drawn in every complete trial; each normalised to sum to 1"
)


def param_importances(study: optuna.Study) -> dict[str, Any]:
    """What mattered in ``study``: ``{"method": IMPORTANCE_METHOD, "params": [{"name", "ped_anova", "fanova"}, ...]}``,
    sorted by ``ped_anova`` (the ranking, which respects the direction) descending; both are fractions of 1
    over the parameters they assess, ``fanova`` None for a parameter fANOVA cannot assess (one not drawn in
    every complete trial, or the only one that is). Deterministic: PED-ANOVA draws nothing, fANOVA's forest is seeded.

    Returns ``{"params": [], "reason": why}`` instead when there is nothing to rank: fewer than two complete
    trials with a finite value, fewer than two parameters that can vary, or an evaluator that raises; never raises.
    """
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if math.isfinite(t.value)]
    if len(complete) < 2:
        return {"params": [], "reason": f"{len(complete)} complete trial(s) with a finite value; importances need at least 2"}
    names = sorted({name for t in complete for name, dist in t.distributions.items() if not dist.single()})
    if len(names) < 2:
        return {"params": [], "reason": f"the complete trials vary {len(names)} parameter(s) ({', '.join(names) or 'none'}); nothing to rank against"}
    everywhere = [n for n in names if all(n in t.params for t in complete)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna warns on small studies and conditional parameters; the reason is ours
            ped = optuna.importance.get_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), params=names)
            fanova = (
                optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=everywhere)
                if len(everywhere) >= 2
                else {}
            )
    except Exception as exc:  # a finished search's summary is written whatever an evaluator makes of its trials
        return {"params": [], "reason": f"importances could not be computed: {type(exc).__name__}: {exc}"}
    rows = [{"name": n, "ped_anova": float(ped[n]), "fanova": float(fanova[n]) if n in fanova else None} for n in names]
    return {"method": IMPORTANCE_METHOD, "params": sorted(rows, key=lambda r: -r["ped_anova"])}


def write_plots(study: optuna.Study, out: Path) -> dict[str, str]:
    """Optuna's matplotlib figures as PNG: history, importances (PED-ANOVA, as ``param_importances`` ranks them),
    intermediate values; each that cannot
    be drawn yet (too few finished trials) is named with the reason instead of a path."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # files only; never switch the backend of a session that already plots
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ov

    made: dict[str, str] = {}
    for name, draw in (
        ("history", ov.plot_optimization_history),
        ("importances", _plot_ped_anova),
        ("intermediate", ov.plot_intermediate_values),
    ):
        path = out / f"{name}.png"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw(study)
            figure = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            figure.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(figure)
            made[name] = str(path)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. importances need 2 complete trials
            made[name] = f"not drawn: {exc}"
            plt.close("all")
    return made


def _plot_ped_anova(study: optuna.Study) -> Any:
    import optuna
    from optuna.visualization import matplotlib as ov

    return ov.plot_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())


class _CallableModule(types.ModuleType):
    """Importing this module makes it the attribute ``mmreg.search``; calling it is ``search(...)``,
    so ``mmreg.search(path, trials=...)`` works before and after that import."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = [
    "DIRECTIONS", "PRUNERS", "SAMPLERS", "Plan", "execute", "open_storage", "param_importances", "plan_search", "reclaim_dead_trials",
    "search", "summarize", "trial_row", "trial_seeds", "worker_identity",
]
