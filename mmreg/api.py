"""The Python API behind the CLI: ``mmreg.run(experiment)`` does everything `mmreg run` does."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import Experiment, validate, write_file
from .errors import IncompatibleParts
from .plugins import PluginHost, load_plugins


def resolve(exp: Experiment, host: PluginHost) -> Experiment:
    """Check every component name and parameter; fill in defaults so the saved config is complete."""
    data = exp.model_dump()
    for key, kind in (("encoder", "encoders"), ("fusion", "fusions"), ("peft", "peft"), ("dataset", "datasets")):
        entry = host.registry(kind).get(data[key]["name"])
        data[key]["params"] = entry.validate(data[key]["params"]).model_dump()
    for key, kind in (("loss", "losses"), ("augment", "augmenters")):
        for name, item in data[key].items():
            item["params"] = host.registry(kind).get(name).validate(item["params"]).model_dump()
    if not data["loss"]:
        raise IncompatibleParts("no loss chosen; add one with --loss, e.g. --loss infonce")
    return Experiment.model_validate(data)


def check_compatible(exp: Experiment, host: PluginHost) -> None:
    """Refuse combinations that cannot work, before any weight is built."""
    fusion = host.registry("fusions").get(exp.fusion.name).factory
    encoder = host.registry("encoders").get(exp.encoder.name).factory
    if getattr(fusion, "needs_tokens", False) and getattr(encoder, "gives_tokens", True) is False:
        raise IncompatibleParts(
            f"fusion '{exp.fusion.name}' needs token sequences but encoder '{exp.encoder.name}' gives only pooled "
            f"vectors; use --fusion none or concat, or an encoder that gives tokens"
        )
    dataset = host.registry("datasets").get(exp.dataset.name).factory
    fields = getattr(dataset, "fields", frozenset({"image", "caption"}))
    for name in exp.loss:
        needs = getattr(host.registry("losses").get(name).factory, "needs", frozenset())
        if "labels" in needs and "label" not in fields:
            raise IncompatibleParts(
                f"loss '{name}' needs class labels but dataset '{exp.dataset.name}' has none; "
                f"choose a dataset with labels or another loss"
            )


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run(
    experiment: Experiment | Mapping[str, Any],
    *,
    host: PluginHost | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and evaluate one experiment; return its summary (also written to summary.json)."""
    from .data import AugmentedSplit, make_loader, require_samples
    from .model import MultimodalModel
    from .runs import append_jsonl, create_run_dir, package_versions, save_weights, write_json
    from .train import evaluate, pick_device, train

    exp = experiment if isinstance(experiment, Experiment) else validate(experiment)
    host = host or load_plugins()
    exp = resolve(exp, host)
    check_compatible(exp, host)
    device = pick_device(exp.train.device)

    seed_everything(exp.seed)
    dataset = host.registry("datasets").build(exp.dataset.name, exp.dataset.params, seed=exp.seed)
    train_split, val_split = dataset.split("train"), dataset.split("val")
    require_samples(train_split, exp.dataset.name, "train", exp.train.batch_size)
    require_samples(val_split, exp.dataset.name, "val", 2)

    encoder = host.registry("encoders").build(exp.encoder.name, exp.encoder.params, captions=dataset.captions("train"))
    encoder = host.registry("peft").build(exp.peft.name, exp.peft.params).apply(encoder)
    fusion = host.registry("fusions").build(exp.fusion.name, exp.fusion.params, dim=exp.model.dim)
    losses = {
        name: (item.weight, host.registry("losses").build(name, item.params)) for name, item in exp.loss.items()
    }
    augmenters = [host.registry("augmenters").build(name, item.params, seed=exp.seed) for name, item in exp.augment.items()]
    model = MultimodalModel(encoder, fusion, losses, exp.model.dim).to(device)

    run_dir = create_run_dir(exp.runs_dir, exp.name, f"{exp.encoder.name}-{exp.fusion.name}-{'+'.join(exp.loss)}")
    write_file(exp, run_dir / "config.toml")
    write_json(run_dir / "versions.json", package_versions({p.name: p.version for p in host.plugins if not p.error}))
    encoder.save_preprocessing(run_dir / "encoder")

    train_loader = make_loader(
        AugmentedSplit(train_split, augmenters, exp.seed), encoder, exp.train.batch_size, shuffle=True, seed=exp.seed, drop_last=True
    )
    val_loader = make_loader(val_split, encoder, exp.train.eval_batch_size, shuffle=False, seed=exp.seed)
    metrics_path = run_dir / "metrics.jsonl"

    if progress:
        from .progress import training_progress

        with training_progress() as on_step:
            result = train(model, train_loader, exp.train, device, metrics_path, on_step)
    else:
        result = train(model, train_loader, exp.train, device, metrics_path)

    started = time.perf_counter()
    metrics = evaluate(model, val_loader, device)
    eval_seconds = time.perf_counter() - started
    append_jsonl(metrics_path, {"step": result.steps, "split": "val", **metrics})
    save_weights(model, run_dir / "model.safetensors")

    summary = {
        "run_dir": str(run_dir),
        "task": "retrieval",
        "metrics": metrics,
        "val_size": len(val_split),
        "train_size": len(train_split),
        "chance@1": 1 / len(val_split),
        "steps": result.steps,
        "epochs": round(result.epochs, 3),
        "final_loss": result.final_loss,
        "train_seconds": round(result.seconds, 2),
        "eval_seconds": round(eval_seconds, 2),
        "samples_per_second": round(result.samples / max(result.seconds, 1e-9), 1),
        "device": str(device),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    write_json(run_dir / "summary.json", summary)
    return summary


__all__ = ["check_compatible", "resolve", "run"]
