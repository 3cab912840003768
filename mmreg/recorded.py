"""A run directory's experiment read back as the run was made: a parameter a component gained after
the run was written takes the value runs used before it existed, not today's default."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .config import Experiment
    from .plugins import PluginHost

BEFORE = "before"  # json_schema_extra key: the value a run recorded without this parameter used
SINGLE = (("encoder", "encoders"), ("fusion", "fusions"), ("peft", "peft"), ("dataset", "datasets"), ("task", "tasks"))
MULTI = (("loss", "losses"), ("augment", "augmenters"), ("balance", "balancers"))


def recorded_experiment(run_dir: Path, host: PluginHost) -> Experiment:
    """``run_dir/config.toml`` for rebuilding, evaluating or resuming that run.

    A run records every parameter of its components resolved, so a parameter missing from the
    record was added since; where its schema declares what runs used before it
    (``Field(..., json_schema_extra={"before": value})``, e.g. the tiny presets' ``vocabulary``)
    that value is set, so the rebuilt model fits the saved weights. Raises what
    ``mmreg.config.load_experiment`` raises for a file that cannot be read.
    """
    from .config import load_experiment

    exp = load_experiment(run_dir / "config.toml")
    _fill_core(exp, run_dir / "config.toml")
    for key, kind in SINGLE:
        choice = getattr(exp, key)
        if choice.name is not None and choice.name in host.registry(kind):
            _fill(choice.params, host.registry(kind).get(choice.name).params)
    for key, kind in MULTI:
        for name, item in getattr(exp, key).items():
            if name in host.registry(kind):
                _fill(item.params, host.registry(kind).get(name).params)
    return exp


def core_before() -> dict[str, Any]:
    """``{"SECTION.KEY": value}``: the core settings (``[train]``, ``[data]``, ...) that declare what runs
    recorded without them used (``train.accumulation``: "micro" before K micro-batches trained as one)."""
    from .config import Experiment

    out = {}
    for section, field in Experiment.model_fields.items():
        schema = field.annotation
        if isinstance(schema, type) and hasattr(schema, "model_fields") and section not in dict(SINGLE) and section != "task":
            for name, inner in schema.model_fields.items():
                extra = inner.json_schema_extra
                if isinstance(extra, dict) and BEFORE in extra:
                    out[f"{section}.{name}"] = extra[BEFORE]
    return out


def _fill_core(exp: Experiment, path: Path) -> None:
    import tomllib

    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    for dotted, value in core_before().items():
        section, name = dotted.split(".")
        if name not in raw.get(section, {}):
            setattr(getattr(exp, section), name, value)


def _fill(params: dict[str, Any], schema: type[BaseModel]) -> None:
    for name, field in schema.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and BEFORE in extra and name not in params:
            params[name] = extra[BEFORE]
