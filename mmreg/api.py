"""The Python API behind the CLI: ``mmreg.run(experiment)`` does everything `mmreg run` does."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Experiment, check_numbers, validate, write_file
from .errors import ConfigError, IncompatibleParts
from .plugins import PluginHost, load_plugins
from .results import check_requested
from .tasks import check_task, choose_task, head_over_fusion, splits_modalities, task_class

if TYPE_CHECKING:
    from .components import Augmenter, Balancer, Dataset, LoopCallback, PeftStrategy, Sample, Task
    from .model import MultimodalModel


def resolve(exp: Experiment, host: PluginHost) -> Experiment:
    """Check every component name and parameter; fill in defaults so the saved config is complete."""
    data = exp.model_dump()
    for key, kind in (("encoder", "encoders"), ("fusion", "fusions"), ("peft", "peft"), ("dataset", "datasets")):
        entry = host.registry(kind).get(data[key]["name"])
        data[key]["params"] = entry.validate(data[key]["params"]).model_dump()
    for key, kind in (("loss", "losses"), ("augment", "augmenters"), ("balance", "balancers")):
        for name, item in data[key].items():
            item["params"] = host.registry(kind).get(name).validate(item["params"]).model_dump()
    if not data["loss"]:
        raise IncompatibleParts(f"no loss chosen; add one with --loss (known: {', '.join(host.registry('losses').names())})")
    check_pairs_drawn(loss_needs(exp, host), host)
    name = choose_task(exp.task.name, loss_needs(exp, host).values(), host.registry("tasks"))
    task_class(host.registry("tasks"), name)  # an unknown name is refused here, with the known ones
    entry = host.registry("tasks").get(name)
    params = {**place_legacy(name, entry.params.model_fields, exp.task.legacy, exp.task.params), **exp.task.params}
    data["task"] = {"name": name, "params": entry.validate(params).model_dump()}
    resolved = Experiment.model_validate(data)
    check_numbers(resolved)
    return resolved


def place_legacy(task: str, fields: Mapping[str, Any], legacy: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """The task parameters an older file layout set in core sections (``eval.prompt``,
    ``answers.min_answer_count``: ``mmreg.config.LEGACY_TASK_SETTINGS``), so run directories
    written before tasks had parameters still evaluate, predict and resume.

    Each goes to the task's parameter of the same name; one the task lacks is dropped at its old
    default and refused otherwise (ConfigError naming where it belongs now)."""
    from .config import LEGACY_TASK_SETTINGS

    placed = {}
    for dotted, value in legacy.items():
        section, _, key = dotted.partition(".")
        if key in fields:
            placed[key] = value
        elif value != LEGACY_TASK_SETTINGS[section][key] and key not in given:
            raise ConfigError(
                f"setting '{dotted}' is now a parameter of the task, and task '{task}' has none named '{key}'; "
                f"remove it, or set task.{key} for a task that has it (mmreg show tasks NAME)"
            )
    return placed


def declared(factory: Any) -> Any:
    """Where a factory's capabilities are declared: the class itself, or the class of a classmethod."""
    return getattr(factory, "__self__", factory)


def loss_needs(exp: Experiment, host: PluginHost) -> dict[str, frozenset[str]]:
    return {name: getattr(declared(host.registry("losses").get(name).factory), "needs", frozenset()) for name in exp.loss}


def having(host: PluginHost, kind: str, test: Callable[[Any], bool], flag: str) -> str:
    """The registered components of ``kind`` whose declared class passes ``test``, as flags for an
    error's way out (``--encoder a or --encoder b``); "another one" where none does. Only error
    paths call it: it imports each component's module."""
    names = []
    for entry in host.registry(kind):
        try:
            if test(declared(entry.factory)):
                names.append(entry.name)
        except Exception:  # a component that cannot even be imported is no way out
            continue
    return " or ".join(f"--{flag} {n}" for n in names) or f"another {flag}"


def check_components(exp: Experiment, host: PluginHost) -> str:
    """Refuse encoder/fusion/loss/task combinations that cannot work, from what the factories
    declare; return the task's name."""
    fusion = declared(host.registry("fusions").get(exp.fusion.name).factory)
    encoder = declared(host.registry("encoders").get(exp.encoder.name).factory)
    if getattr(fusion, "needs_tokens", False) and getattr(encoder, "gives_tokens", True) is False:
        raise IncompatibleParts(
            f"fusion '{exp.fusion.name}' needs token sequences but encoder '{exp.encoder.name}' gives only pooled "
            f"vectors; use --fusion none or concat, or an encoder that gives tokens"
        )
    if getattr(encoder, "single_stream", False) and exp.fusion.name != "none":
        raise IncompatibleParts(
            f"encoder '{exp.encoder.name}' is single-stream: it fuses image and text inside itself, so fusion "
            f"'{exp.fusion.name}' would be meaningless; use --fusion none"
        )
    needs = loss_needs(exp, host)
    check_language_model(exp, host, encoder, needs)
    wants_scale = [name for name, n in needs.items() if "logit_scale" in n]
    if wants_scale and not getattr(encoder, "gives_logit_scale", False):
        own = having(host, "losses", lambda c: getattr(c, "needs", frozenset()) == {"scores"}, "loss")
        scaled = having(host, "encoders", lambda c: getattr(c, "gives_logit_scale", False), "encoder")
        raise IncompatibleParts(
            f"loss '{wants_scale[0]}' uses the encoder's own logit scale but encoder '{exp.encoder.name}' has none; "
            f"use a loss with its own temperature ({own}) or an encoder with a logit scale ({scaled})"
        )
    wants_views = [name for name, n in needs.items() if "views" in n]
    makes_views = [n for n in exp.augment if getattr(declared(host.registry("augmenters").get(n).factory), "gives_views", False)]
    if wants_views and not makes_views:
        makers = having(host, "augmenters", lambda c: getattr(c, "gives_views", False), "augment")
        raise IncompatibleParts(f"loss '{wants_views[0]}' needs two augmented views of each image but no augmenter makes them; add {makers}")
    check_pairs(exp, host, needs, fusion, encoder)
    name = choose_task(exp.task.name, needs.values(), host.registry("tasks"))
    task = task_class(host.registry("tasks"), name)
    check_balance(exp, host, fusion, encoder, name, task)
    check_requested(task, name, exp.train.metric, "train.metric", ema=exp.train.ema is not None, sets=tuple(exp.eval_sets))
    if task.needs_image_tokens and getattr(encoder, "gives_tokens", True) is False:
        givers = having(host, "encoders", lambda c: getattr(c, "gives_tokens", True) and not getattr(c, "single_stream", False), "encoder")
        raise IncompatibleParts(f"task '{name}' reads image tokens but encoder '{exp.encoder.name}' gives only pooled vectors; use {givers}")
    if getattr(encoder, "single_stream", False) and (task.needs_image_tokens or wants_views):
        what = f"task '{name}'" if task.needs_image_tokens else f"loss '{wants_views[0]}'"
        towers = having(host, "encoders", lambda c: not getattr(c, "single_stream", False), "encoder")
        raise IncompatibleParts(
            f"{what} reads the image alone but encoder '{exp.encoder.name}' is single-stream (it encodes image and text together); "
            f"use an encoder with separate towers: {towers}"
        )
    fields = getattr(declared(host.registry("datasets").get(exp.dataset.name).factory), "fields", None)
    if fields is not None:
        check_task(name, task, host, needs, exp.dataset.name, frozenset(fields))
    return name


def check_language_model(exp: Experiment, host: PluginHost, encoder: Any, needs: dict[str, frozenset[str]]) -> None:
    """An encoder that conditions a language model on image queries (``Encoder.conditions_language_model``)
    is trained through the text the language model writes: no separate fusion, only losses on it."""
    if not getattr(encoder, "conditions_language_model", False):
        return
    if exp.fusion.name != "none":
        raise IncompatibleParts(
            f"encoder '{exp.encoder.name}' conditions a language model on image queries, which reads image and text together, "
            f"so fusion '{exp.fusion.name}' would be meaningless; use --fusion none"
        )
    for name, read in needs.items():
        if read - {"token_logits"}:
            writers = having(host, "losses", lambda c: getattr(c, "needs", frozenset()) == {"token_logits"}, "loss")
            raise IncompatibleParts(
                f"loss '{name}' reads {', '.join(sorted(read - {'token_logits'}))}, but encoder '{exp.encoder.name}' is trained "
                f"through the text its language model writes; use {writers}"
            )


def check_pairs_drawn(needs: dict[str, frozenset[str]], host: PluginHost) -> None:
    """A loss reading "pairs" draws its negatives from the contrastive similarities: a loss on "scores" must train them."""
    picks = [name for name, n in needs.items() if "pairs" in n]
    if picks and not any("scores" in n for n in needs.values()):
        contrastive = having(host, "losses", lambda c: "scores" in getattr(c, "needs", frozenset()), "loss")
        raise IncompatibleParts(
            f"loss '{picks[0]}' draws its negatives from the contrastive similarities, which no chosen loss trains; add {contrastive}"
        )


def check_pairs(exp: Experiment, host: PluginHost, needs: dict[str, frozenset[str]], fusion: Any, encoder: Any) -> None:
    """A loss reading "pairs" (``mmreg.components.Pairs``) needs a pairwise fusion over separate towers."""
    from .components import PairwiseFusion

    picks = [name for name, n in needs.items() if "pairs" in n]
    if not picks:
        return
    if not (isinstance(fusion, type) and issubclass(fusion, PairwiseFusion)) or getattr(encoder, "single_stream", False):
        pairwise = having(host, "fusions", lambda c: isinstance(c, type) and issubclass(c, PairwiseFusion), "fusion")
        raise IncompatibleParts(
            f"loss '{picks[0]}' picks the pairs a pairwise fusion scores, and fusion '{exp.fusion.name}' with encoder "
            f"'{exp.encoder.name}' scores every pair at once; use {pairwise} with an encoder of separate towers"
        )


def check_balance(exp: Experiment, host: PluginHost, fusion: Any, encoder: Any, task_name: str, task: Any) -> None:
    """A balancer reading each modality's own logits (``Balancer.needs_unimodal``) needs a fusion that
    gives them (``Fusion.gives_unimodal``) over separate towers, and a task whose head reads the fusion."""
    readers = [n for n in exp.balance if getattr(declared(host.registry("balancers").get(n).factory), "needs_unimodal", False)]
    if not readers:
        return
    if not splits_modalities(fusion, encoder):
        givers = having(host, "fusions", lambda c: getattr(c, "gives_unimodal", False), "fusion")
        raise IncompatibleParts(
            f"balancer '{readers[0]}' reads each modality's own logits, which fusion '{exp.fusion.name}' with encoder "
            f"'{exp.encoder.name}' cannot give; use {givers} with an encoder of separate towers"
        )
    if not head_over_fusion(task):
        heads = having(host, "tasks", head_over_fusion, "task")
        raise IncompatibleParts(
            f"balancer '{readers[0]}' reads each modality's own logits from a head over the fusion, and task '{task_name}' has none; use {heads}"
        )


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Prepared:
    """A validated experiment with everything built, before any file is written."""

    exp: Experiment
    task: Task
    dataset: Dataset
    train_split: Sequence[Sample]
    val_split: Sequence[Sample]
    augmenters: list[Augmenter]
    model: MultimodalModel
    skipped: dict[str, list[str]]  # per split, the unusable samples left out (data.skip_bad), as "where: problem"
    text_fit: dict[str, dict[str, Any] | None]  # per split, texts truncated by the tokenizer (mmreg.textfit.measure)
    strategy: PeftStrategy  # applied to model.encoder; a loop callback during training
    checks: dict[str, str] = field(default_factory=dict)  # per split, which unusable-image check ran (mmreg.badimages)
    balancers: dict[str, Balancer] = field(default_factory=dict)  # gradient hooks in the experiment's order (mmreg.balance)

    @property
    def classes(self) -> list[str]:
        """The head's classes or answers; empty for a task without them."""
        return self.task.classes


def prepare(experiment: Experiment | Mapping[str, Any], host: PluginHost | None = None, *, strict: bool = True) -> Prepared:
    """Validate, check compatibility, then build data and model; bad input fails before any weight exists.

    ``strict=False`` (`mmreg data inspect`) leaves out unusable samples and lets
    truncation merge texts, reporting both in the result instead of refusing them.
    """
    import torch

    from . import textfit
    from .badimages import check_mode, describe_check
    from .data import require_samples, without_bad
    from .images import parse_colour
    from .model import MultimodalModel
    from .streams import check_stream

    exp = experiment if isinstance(experiment, Experiment) else validate(experiment)
    host = host or load_plugins()
    exp = resolve(exp, host)
    task_name = check_components(exp, host)

    seed_everything(exp.seed)
    dataset = host.registry("datasets").build(exp.dataset.name, exp.dataset.params, seed=exp.seed)
    task = host.registry("tasks").build(task_name, exp.task.params, settings=exp.eval)
    task.name = task_name
    check_task(task_name, task, host, loss_needs(exp, host), exp.dataset.name, frozenset(dataset.fields))
    skip, background = exp.data.skip_bad or not strict, parse_colour(exp.data.background)
    data = exp.data
    modes = {split: check_mode(len(dataset.split(split)), data.full_check_max) for split in ("train", "val")}
    train_split, skipped_train = without_bad(dataset, exp.dataset.name, "train", skip, background, modes["train"])
    val_split, skipped_val = without_bad(dataset, exp.dataset.name, "val", skip, background, modes["val"])
    skipped_train += check_stream(train_split, exp.dataset.name, "train", modes["train"], skip)  # a streamed split's check
    skipped_val += check_stream(val_split, exp.dataset.name, "val", modes["val"], skip)
    checks = {s: describe_check(s, dataset.split(s), m, data.full_check_max, data.max_unreadable) for s, m in modes.items()}
    require_samples(train_split, exp.dataset.name, "train", exp.train.batch_size if strict else 1)
    require_samples(val_split, exp.dataset.name, "val", 2 if strict else 1)

    encoder = host.registry("encoders").build(exp.encoder.name, exp.encoder.params, captions=dataset.texts("train", task.text))
    text_fit = {split: textfit.measure(encoder, dataset.texts(split, task.text), task.text) for split in ("train", "val")}
    if strict:
        textfit.check(text_fit, exp.data.max_merged_by_truncation, encoder)
    strategies = host.registry("peft")
    strategy = strategies.build(exp.peft.name, exp.peft.params, strategies=strategies)
    fusion = encoder.joint_fusion() if encoder.single_stream else host.registry("fusions").build(exp.fusion.name, exp.fusion.params, dim=exp.model.dim)
    losses = {name: (item.weight, host.registry("losses").build(name, item.params)) for name, item in exp.loss.items()}
    augmenters = [host.registry("augmenters").build(name, item.params, seed=exp.seed) for name, item in exp.augment.items()]
    head = task.build_head(fusion.out_dim, dataset, encoder)
    check_task(task_name, task, host, loss_needs(exp, host), exp.dataset.name, frozenset(dataset.fields))  # the form the head took
    model = MultimodalModel(encoder, fusion, losses, exp.model.dim, task, head)
    model.eval()  # no dropout while a task reads the model to set its head
    with torch.no_grad():
        task.initialise(model)  # e.g. a classifier from its class prompts, before PEFT wraps the towers
    model.train()
    strategy.apply(model.encoder)  # after the model is composed: Encoder.use() must not unfreeze what it froze
    skipped = {"train": skipped_train, "val": skipped_val}
    balancers = {name: host.registry("balancers").build(name, item.params) for name, item in exp.balance.items()}
    return Prepared(exp, task, dataset, train_split, val_split, augmenters, model, skipped, text_fit, strategy, checks, balancers)


def split_counts(p: Prepared) -> dict[str, int]:
    """``val_images`` and ``val_texts`` (likewise for train): distinct images and texts of each
    split. Rows that share an ``image_id`` are one image with several captions; where the dataset
    gives none, rows holding the same picture are (``mmreg.identity.split_keys``, for splits of up
    to ``data.full_check_max``)."""
    from .identity import count_images, split_keys

    counts = {}
    for split, samples in (("train", p.train_split), ("val", p.val_split)):
        counts[f"{split}_images"] = count_images(split_keys(p.dataset, split, samples, p.exp.data.full_check_max))
        counts[f"{split}_texts"] = len(samples)
    return counts


def collate_for(prepared: Prepared) -> Any:
    from .data import Collate

    return Collate(prepared.model.encoder, prepared.task)


def loading_notes(p: Prepared, num_workers: int) -> list[str]:
    """Progress lines on how the data is read: the unusable-image check of each split, the workers."""
    workers = f"{num_workers} DataLoader worker processes" if num_workers else "images loaded in the training process"
    counts = split_counts(p)
    sizes = "; ".join(f"{s} {counts[f'{s}_images']} images, {counts[f'{s}_texts']} texts" for s in ("train", "val"))
    return [*(f"data check: {line}" for line in p.checks.values()), f"data: {sizes}", f"data loading: {workers} (data.num_workers={p.exp.data.num_workers})"]


def is_main_process() -> bool:
    """Rank 0 under torchrun / accelerate launch (they set RANK); the only process that writes."""
    return os.environ.get("RANK", "0") == "0"


def shared_run_dir(exp: Experiment) -> Path:
    """The main process creates the run directory; under data parallelism the others learn its name."""
    from .runs import create_run_dir

    label = f"{exp.encoder.name}-{exp.fusion.name}-{'+'.join(exp.loss)}"
    if os.environ.get("WORLD_SIZE", "1") == "1":
        return create_run_dir(exp.runs_dir, exp.name, label)
    import torch.distributed as dist
    from accelerate import PartialState

    from .train import pick_device

    # Joins the process group the launcher set up; on CPUs accelerate uses gloo only if told cpu=True first.
    PartialState(cpu=pick_device(exp.train.device).type == "cpu")
    name = [str(create_run_dir(exp.runs_dir, exp.name, label)) if is_main_process() else None]
    dist.broadcast_object_list(name, src=0)
    return Path(name[0])


def run(
    experiment: Experiment | Mapping[str, Any] | None = None,
    *,
    host: PluginHost | None = None,
    progress: bool = True,
    resume: str | Path | None = None,
    callbacks: Sequence[LoopCallback] = (),
) -> dict[str, Any]:
    """Train and evaluate one experiment; return its summary (also written to summary.json).

    ``resume`` continues the run in that directory from its last checkpoint, with
    the experiment it saved; nothing else in the directory is replaced until the
    run moves past that checkpoint. ``callbacks`` (mmreg.components.LoopCallback)
    see the loop, every evaluation included (`mmreg search` reports to its pruner
    there); what one raises ends the run.
    """
    from .adapters import parameter_counts, save_adapters
    from .optim import part_counts
    from .data import AugmentedSplit, Collate, local_processes, make_loader, resolve_workers
    from .evalsets import set_experiments, set_metrics, set_parts
    from .determinism import deterministic_kernels
    from .distributed import check_launch
    from .precision import cuda_capability, resolve_precision, tf32_applies, tf32_matmuls, used_precision
    from .recorded import recorded_experiment
    from .contracts import preflight
    from .results import resolve_metric
    from .resume import check_resume, trajectory
    from .runs import check_runs_dir, package_versions, save_weights, write_json
    from .sampling import split_groups
    from .tracking import Tracking
    from .train import Trainer, pick_device

    host = host or load_plugins()
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.toml").is_file():
            raise ConfigError(f"{run_dir} is not a run directory (no config.toml); give the directory `mmreg run` printed")
        experiment = recorded_experiment(run_dir, host)
    if experiment is None:
        raise ConfigError("nothing to run: give an experiment, or resume=RUN_DIR")
    exp = experiment if isinstance(experiment, Experiment) else validate(experiment)
    check_launch(os.environ)
    device = pick_device(exp.train.device)
    # `auto` becomes what it stands for on this device before anything is built; config.toml keeps
    # the concrete precision, so a resumed run trains in the same one (mmreg.resume).
    exp = exp.model_copy(update={"train": exp.train.model_copy(update={"precision": resolve_precision(exp.train.precision, device)})})
    if resume is not None:
        check_resume(run_dir, resolve(exp, host))  # an edited config.toml fails before any file changes
    else:
        check_runs_dir(exp.runs_dir)
    tracking = Tracking(exp.track, resume=run_dir if resume is not None else None)  # a missing package fails here too
    p = prepare(exp, host)
    exp, model = p.exp, p.model
    sets = set_parts(p, set_experiments(exp, host), host)  # extra evaluation sets, checked before any file exists

    # Everything that can refuse the experiment runs before the run directory exists.
    tf32 = tf32_applies(device.type, cuda_capability(device), exp.train.tf32)
    with deterministic_kernels(exp.train.deterministic), tf32_matmuls(tf32), tracking:
        collate = collate_for(p)
        device = pick_device(exp.train.device)
        val_loader = make_loader(
            p.val_split, collate, exp.train.eval_batch_size, shuffle=False, seed=exp.seed,
            num_workers=resolve_workers(exp.data.num_workers, device, local_processes()),
            pin_memory=device.type == "cuda", max_unreadable=exp.data.max_unreadable,
        )  # fmt: skip
        metric = resolve_metric(p.task, p.task.evaluations(model), exp.train.metric, ema=exp.train.ema is not None, sets=set_metrics(sets, model))
        set_loaders = [
            (name, task, make_loader(samples, Collate(model.encoder, task), exp.train.eval_batch_size, shuffle=False, seed=exp.seed,
                                     num_workers=resolve_workers(exp.data.num_workers, device, local_processes()),
                                     pin_memory=device.type == "cuda", max_unreadable=exp.data.max_unreadable))
            for name, task, samples in sets
        ]  # fmt: skip
        trainer = Trainer(
            model,
            AugmentedSplit(p.train_split, p.augmenters, exp.seed),
            collate,
            val_loader,
            exp.train,
            seed=exp.seed,
            run_dir=None,
            metric=metric,
            num_workers=exp.data.num_workers,
            max_unreadable=exp.data.max_unreadable,
            optim=exp.optim,
            callbacks=[p.strategy, *callbacks],
            image_groups=split_groups(p.dataset, "train", p.train_split, exp.data.full_check_max),
            eval_sets=set_loaders,
            balancers=p.balancers,
        )
        trainer.trajectory = trajectory(exp, trainer.accelerator.num_processes)
        preflight(p, host, collate, trainer.device)  # a broken contract ends here, before any file is written
        if resume is None:
            runs_dir_existed = Path(exp.runs_dir).exists()
            run_dir = shared_run_dir(exp)
        trainer.run_dir = run_dir
        if resume is None and is_main_process():
            write_file(exp, run_dir / "config.toml")
            write_json(run_dir / "versions.json", package_versions({i.name: i.version for i in host.plugins if not i.error}))
            if p.classes:
                write_json(run_dir / "classes.json", p.classes)
            model.encoder.save_preprocessing(run_dir / "encoder")
        if resume is not None:
            trainer.resume()
        try:
            tracking.attach(trainer, exp, run_dir)
        except ConfigError:
            if resume is None and trainer.main:  # a tracker that cannot start leaves no new run behind
                import shutil

                shutil.rmtree(run_dir, ignore_errors=True)
                if not runs_dir_existed and not any(Path(exp.runs_dir).iterdir()):
                    Path(exp.runs_dir).rmdir()
            raise
        if progress and trainer.main:
            from .progress import training_progress
            from .textfit import note

            notes = [*loading_notes(p, trainer.num_workers), *[line for line in [note(p.text_fit)] if line]]
            with training_progress(notes=notes) as on_step:
                result = trainer.fit(on_step)
        else:
            result = trainer.fit()

    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "task": p.task.name,
        "metrics": result.metrics,
        "val_size": len(p.val_split),
        "train_size": len(p.train_split),
        **split_counts(p),
    }
    if described := p.task.describe():  # the task's own account of how it scored; the core never reads it
        summary[p.task.name] = described
    if p.classes:
        summary["classes"] = len(p.classes)
    if any(p.skipped.values()):
        summary["skipped"] = {split: len(problems) for split, problems in p.skipped.items()}
    unreadable = {t.split: t.summary() for t in (trainer.loader.tally, val_loader.tally) if t.problems}
    if unreadable:
        summary["unreadable"] = unreadable  # failed to decode while loading: skipped, counted, named
    summary["text"] = p.text_fit
    summary.update(
        {
            "best": {**metric.record(), "value": result.best, "step": result.best_step},
            "steps": result.steps,
            "epochs": round(result.epochs, 3),
            "final_loss": result.final_loss,
            "skipped_steps": result.skipped_steps,
            "stopped_early": result.stopped_early,
            "train_seconds": round(result.seconds, 2),
            "samples_per_second": round(result.samples / max(result.seconds, 1e-9), 1),
            "device": str(trainer.device),
            "precision": used_precision(trainer.accelerator),
            "processes": trainer.accelerator.num_processes,
            **parameter_counts(model, model.encoder),
            "parts": part_counts(model),
        }
    )
    if trainer.main:
        from .plot import plot_curves

        save_weights(trainer.bare_model, run_dir / "model.safetensors")
        save_adapters(model, run_dir / "adapters")
        plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
        write_json(run_dir / "summary.json", summary)
        tracking.finish(run_dir / "curves.png", summary["best"])
    return summary


__all__ = ["Prepared", "check_components", "prepare", "resolve", "run"]
