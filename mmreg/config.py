"""The experiment: an optional file (TOML/YAML), then CLI flags, then --set overrides, validated."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, field_validator

from .errors import ConfigError, did_you_mean


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    epochs: int = Field(4, ge=1, description="passes over the training split")
    max_steps: int | None = Field(
        None, ge=0, description="stop after this many optimizer steps (overrides epochs); 0 evaluates the initial weights and trains nothing"
    )
    batch_size: int = Field(32, ge=2, description="samples per step; contrastive losses need at least 2")
    eval_batch_size: int = Field(128, ge=1, description="samples per batch when encoding the validation split")
    lr: float = Field(
        1e-3, gt=0, description="AdamW learning rate", json_schema_extra={"search": {"low": 1e-5, "high": 1e-2, "log": True}}
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    device: str = Field("auto", description="auto (cuda, then mps, then cpu), cpu, cuda or mps")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto",
        description="auto: bf16 autocast on Ampere and newer GPUs, fp16 (with loss scaling) on older ones, fp32 on the CPU; "
        "the run records what auto resolved to",
    )
    tf32: bool = Field(True, description="fp32 matmuls and convolutions in TF32 on Ampere and newer GPUs (no effect elsewhere)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step (effective batch = batch_size * N)")
    accumulation: Literal["whole", "micro"] = Field(
        "whole",
        description="with grad_accum, what a loss comparing samples across the batch (contrastive, hard negatives, views) sees: "
        "whole: the whole grad_accum x batch_size batch, every negative kept (GradCache); micro: each micro-batch alone",
        json_schema_extra={"before": "micro"},
    )
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the gradient norm to this; unset: no clipping")
    schedule: Literal["constant", "linear", "cosine"] = Field("cosine", description="learning-rate decay after warmup")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="fraction of the steps spent warming the lr up from ~0")
    eval_every: int | None = Field(None, ge=1, description="evaluate every N steps; unset: at the end of each epoch")
    checkpoint_every: int | None = Field(None, ge=1, description="save the last checkpoint every N steps; unset: at each evaluation")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="stop after N evaluations without improving the metric; unset: never"
    )
    metric: str | None = Field(
        None, description="validation metric for best checkpoint and early stopping (ema/NAME: the moving average's); unset: the task's headline"
    )
    ema: float | None = Field(
        None, ge=0, lt=1, description="decay of an exponential moving average of the weights (timm's ModelEmaV3), evaluated "
        "(metrics ema/NAME) and checkpointed beside them; unset: none"
    )
    ema_warmup: float | None = Field(
        None, gt=0, le=1, description="warm the EMA decay up as timm does, min(ema, 1 - (1 + step)^-power) with this power "
        "(2/3 for long runs, 3/4 shorter); unset: the full decay from the second step"
    )
    max_bad_steps: int = Field(3, ge=1, description="stop after N non-finite losses in a row (each is skipped)")
    gradient_checkpointing: bool = Field(False, description="recompute encoder activations in backward to save memory")
    compile: bool = Field(False, description="torch.compile the model")
    log_every: int = Field(10, ge=1, description="write training metrics every N steps")
    deterministic: bool = Field(
        True,
        description="same config, machine, versions, device and process count: same metrics and weights "
        "(deterministic kernels; see the README for what it costs)",
    )


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    skip_bad: bool = Field(False, description="skip and count unusable samples instead of stopping before training")
    num_workers: NonNegativeInt | Literal["auto"] = Field(
        "auto", description="DataLoader worker processes; 0: load in the main process; auto: none on the CPU, else from the CPUs per process (at most 8)"
    )
    full_check_max: int = Field(
        50_000, ge=0, description="splits up to this many samples are fully decoded before training; larger ones get a header-only check"
    )
    max_unreadable: float = Field(
        0.01, ge=0, le=1, description="stop the run when more than this share of a split fails to decode while loading (each is skipped)"
    )
    background: str = Field("white", description="colour transparent pixels are composited onto: a name or #rrggbb")
    max_merged_by_truncation: float = Field(
        0.05, ge=0, le=1, description="refuse a run when truncation makes more than this share of a split's distinct texts identical"
    )

    @field_validator("background")
    @classmethod
    def _is_a_colour(cls, value: str) -> str:
        from .images import parse_colour

        try:
            parse_colour(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dim: int = Field(64, ge=1, description="shared width both modalities are projected to")


class EvalConfig(BaseModel):
    """What evaluation may use, for every task (each task's own settings are in ``[task]``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    score_memory_mb: int = Field(512, ge=1, description="memory bound of one block of retrieval scores, in MiB")


class EvalSet(BaseModel):
    """An extra evaluation set (``[eval_sets.NAME]``): the run's data and task with another dataset,
    task or their parameters swapped in, as ``mmreg eval --dataset/--task/--set`` swaps them."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dataset: str | None = Field(None, description="a dataset plugin; unset: the run's dataset")
    task: str | None = Field(None, description="a task that builds no head (e.g. zeroshot); unset: the run's task, its head included")
    set: list[str] = Field(default_factory=list, description="dataset.KEY=VALUE and task.KEY=VALUE settings of this set")


# Settings that lived in core sections before tasks had parameters, with the defaults every run
# directory of that layout recorded: ``resolve`` moves each into the task that has a parameter of
# that name, drops it at its old default, and refuses any other value (mmreg.api.resolve).
LEGACY_TASK_SETTINGS: dict[str, dict[str, Any]] = {
    "eval": {"shortlist": None, "num_beams": 1, "max_new_tokens": 20, "prompt": ""},
    "answers": {"min_answer_count": 1},
}


class GroupLR(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    vision: float | None = Field(None, gt=0, description="learning rate of the vision tower; unset: train.lr")
    text: float | None = Field(None, gt=0, description="learning rate of the text tower; unset: train.lr")
    fusion: float | None = Field(
        None, gt=0, description="learning rate of what lies between towers and head (projections, fusion, temperatures); unset: train.lr"
    )
    head: float | None = Field(None, gt=0, description="learning rate of the task head; unset: train.lr")
    bridge: float | None = Field(
        None, gt=0, description="learning rate of the tower linking image to language model (BLIP-2's Q-Former); unset: train.lr"
    )


class OptimConfig(BaseModel):
    """Parameter groups of the optimizer (see mmreg/optim.py)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Literal["adamw", "sgd"] = Field(
        "adamw",
        description="adamw, or sgd with momentum (what OGM-GE's paper trains with: Adam rescales each weight's step by its "
        "own gradient history, which undoes much of a balancer's rescaling)",
        json_schema_extra={"before": "adamw"},
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd's momentum (unused by adamw)", json_schema_extra={"before": 0.9})
    lr: GroupLR = GroupLR()
    layer_decay: float | None = Field(
        None, gt=0, le=1, description="layer-wise lr decay inside each tower: layer k of L gets lr * decay^(L+1-k); unset: none"
    )


class TrackConfig(BaseModel):
    """Experiment trackers fed with what metrics.jsonl holds (see mmreg/tracking.py)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    trackers: list[Literal["tensorboard", "mlflow", "wandb", "aim"]] = Field(
        default_factory=list, description="trackers to log to (each an extra: pip install 'mmreg[NAME]'); empty: none"
    )
    project: str = Field("mmreg", min_length=1, description="MLflow experiment, W&B project and Aim experiment of a run")
    group: str | None = Field(
        None, description="the study a run belongs to (set by `mmreg search`): MLflow experiment, W&B group, Aim experiment"
    )
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI; unset: a file store in RUN_DIR/mlruns")
    wandb_url: str | None = Field(None, description="W&B server URL, logging online; unset: offline, files in RUN_DIR/wandb")
    aim_repo: str | None = Field(None, description="Aim repository path or aim:// URL; unset: RUN_DIR/.aim")


class Component(BaseModel):
    """A chosen component: its registered name and its parameters."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class TaskChoice(BaseModel):
    """The task: its registered name (None: chosen from the losses) and its parameters."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    # Settings of an older file layout (``LEGACY_TASK_SETTINGS``) found in the file, for resolve to place.
    legacy: dict[str, Any] = Field(default_factory=dict, exclude=True)


class WeightedComponent(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    weight: float = Field(1.0, gt=0, description="the loss's share of the total; leave a loss out rather than weigh it 0")
    params: dict[str, Any] = Field(default_factory=dict)


class StackedComponent(BaseModel):
    """One of several components applied in order (a balancer): its parameters."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    params: dict[str, Any] = Field(default_factory=dict)


# The default experiment (`mmreg run` with no flags): the one place the core names built-in plugins.
DEFAULTS = {"encoder": "clip", "fusion": "gated", "loss": "infonce", "augment": "none", "peft": "full", "dataset": "shapes"}


class Experiment(BaseModel):
    """Everything a run needs; saved resolved as config.toml in the run directory."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str | None = Field(None, description="run name; the run directory is named after it")
    seed: int = Field(0, ge=0, description="seeds data order, initialisation and augmentation")
    runs_dir: str = Field("runs", description="where run directories are created")
    task: TaskChoice = Field(
        default_factory=TaskChoice,
        description="the task plugin to train for and its parameters; by default the task that declares itself the default "
        "for what the losses read (Task.default_for: a head's logits before the fusion's scores)",
    )
    encoder: Component = Component(name=DEFAULTS["encoder"])
    fusion: Component = Component(name=DEFAULTS["fusion"])
    loss: dict[str, WeightedComponent] = Field(default_factory=lambda: {DEFAULTS["loss"]: WeightedComponent()})
    augment: dict[str, WeightedComponent] = Field(default_factory=lambda: {DEFAULTS["augment"]: WeightedComponent()})
    balance: dict[str, StackedComponent] = Field(
        default_factory=dict,
        description="gradient hooks applied in this order between the backward pass and the optimizer step (OGM-GE); none by default",
    )
    peft: Component = Component(name=DEFAULTS["peft"])
    dataset: Component = Component(name=DEFAULTS["dataset"])
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    eval_sets: dict[str, EvalSet] = Field(
        default_factory=dict,
        description="extra evaluation sets by name, evaluated with the validation split; their metrics are NAME/METRIC",
    )
    optim: OptimConfig = OptimConfig()
    track: TrackConfig = TrackConfig()


SINGLE = ("encoder", "fusion", "peft", "dataset", "task")
MULTI = ("loss", "augment", "balance")
WEIGHTED = ("loss", "augment")  # the sections of MULTI whose entries carry a weight


# -- the file format <-> the object -------------------------------------------
# In a file a component is a table of its name and its parameters side by side
# ([fusion] name = "gated", heads = 4), and a list of components is a table per
# name ([loss.infonce] weight = 1.0, temperature = 0.07), so --set reaches any
# parameter by a dotted key: fusion.heads=8, loss.infonce.temperature=0.05.


def default_name(key: str) -> str | None:
    """The component a table of ``key`` without a name sets parameters of (None for the task:
    the losses choose it, ``mmreg.tasks.choose_task``)."""
    return None if key == "task" else Experiment.model_fields[key].default.name


def with_task_table(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The file layout with ``task = "NAME"`` (the short form, and the layout of older run
    directories) written as the table ``[task] name = "NAME"``, so flags and --set reach its parameters."""
    data = dict(raw)
    if "task" in data and data["task"] is None:  # Python callers' "task": None: chosen from the losses
        del data["task"]
    if isinstance(data.get("task"), str):
        data["task"] = {"name": data["task"]}
    return data


def _from_file_layout(raw: Mapping[str, Any]) -> dict[str, Any]:
    data = with_task_table(raw)
    legacy = {}
    for section, keys in LEGACY_TASK_SETTINGS.items():
        if isinstance(data.get(section), Mapping):
            table = dict(data[section])
            legacy.update({f"{section}.{k}": table.pop(k) for k in keys if k in table})
            data[section] = table
    if not data.get("answers") and "answers" in data:
        del data["answers"]
    for key in SINGLE:
        if key in data:  # a table without a name sets parameters of the default component
            table = _table(data[key], key)
            name = table.get("name", default_name(key))
            data[key] = {"name": name, "params": {k: v for k, v in table.items() if k != "name"}}
    if legacy:
        data["task"] = {**data.get("task", {"name": None, "params": {}}), "legacy": legacy}
    for key in MULTI:
        if key in data:
            entries = {}
            for name, table in _table(data[key], key).items():
                table = _table(table, f"{key}.{name}")
                if key not in WEIGHTED:
                    entries[name] = {"params": table}
                    continue
                entries[name] = {"weight": table.get("weight", 1.0), "params": {k: v for k, v in table.items() if k != "weight"}}
            data[key] = entries
    return data


def to_file_layout(exp: Experiment) -> dict[str, Any]:
    """The experiment as it is written to a file (None values left out: TOML has no null)."""
    data = exp.model_dump()
    for key in SINGLE:
        data[key] = {"name": data[key]["name"], **data[key]["params"]}
    if data["task"] == {"name": None}:
        del data["task"]
    for key in MULTI:
        data[key] = {name: {**({"weight": e["weight"]} if key in WEIGHTED else {}), **e["params"]} for name, e in data[key].items()}
    if not data["eval_sets"]:  # as files written before evaluation sets existed: none
        del data["eval_sets"]
    if not data["balance"]:  # as files written before balancers existed: none
        del data["balance"]
    return _drop_none(data)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"'{where}' must be a table, got {type(value).__name__} {value!r}")
    return dict(value)


def read_file(path: str | Path) -> dict[str, Any]:
    """Read an experiment file into its raw file layout."""
    path = Path(path)
    if path.is_dir() and (path / "config.toml").is_file():
        path = path / "config.toml"
    if not path.is_file():
        raise ConfigError(f"experiment file {path} does not exist; give a .toml or .yaml file (or a run directory)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"experiment file {path} is not UTF-8 text; give a .toml or .yaml file") from None
    except OSError as exc:
        raise ConfigError(f"experiment file {path} cannot be read: {exc.strerror}") from None
    if not text.strip():
        raise ConfigError(f"experiment file {path} is empty; write settings in it, or run without a file for the defaults")
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"experiment file {path} is not valid TOML: {exc}") from exc
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"experiment file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    else:
        raise ConfigError(f"experiment file {path}: unknown format '{path.suffix}'; use .toml, .yaml or .yml")
    if not isinstance(data, dict):
        raise ConfigError(f"experiment file {path} must hold a table of settings at the top level")
    return data


def write_file(exp: Experiment, path: Path) -> None:
    """Write the experiment as TOML, rerunnable with `mmreg run PATH`."""
    import tomli_w

    from .runs import write_atomic

    write_atomic(path, tomli_w.dumps(to_file_layout(exp)))


# -- flags and overrides ------------------------------------------------------


def parse_value(text: str) -> Any:
    """A --set value: a TOML literal (1, 0.5, true, [1, 2], "x") or else a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_weighted(spec: str) -> tuple[str, float]:
    """'NAME:0.7' -> ('NAME', 0.7); 'NAME' -> ('NAME', 1.0)."""
    name, sep, weight = spec.partition(":")
    if not sep:
        return spec, 1.0
    try:
        return name, float(weight)
    except ValueError:
        raise ConfigError(f"'{spec}': the weight after ':' must be a number, e.g. {name}:0.5") from None


def apply_flags(raw: dict[str, Any], flags: Mapping[str, Any]) -> dict[str, Any]:
    """Apply CLI flags (already in file layout) over the file's settings.

    Choosing another component by flag drops the file's parameters for the old
    one: they belonged to a different schema.
    """
    data = {k: dict(v) if isinstance(v, Mapping) else v for k, v in with_task_table(raw).items()}
    for key in SINGLE:
        name = flags.get(key)
        if name is not None:
            old = data.get(key) or {}
            data[key] = dict(old) if old.get("name") == name else {"name": name}
    for key in MULTI:
        specs: Sequence[str] | None = flags.get(key)
        if specs:
            old = data.get(key) or {}
            entries = {}
            for spec in specs:
                if key not in WEIGHTED:
                    if ":" in spec or spec in entries:
                        raise ConfigError(f"--{key} '{spec}': give each {key} once, by name and without a weight (they apply in order)")
                    entries[spec] = dict(old.get(spec, {}))
                    continue
                name, weight = parse_weighted(spec)
                if name in entries:
                    raise ConfigError(f"--{key} {name} is given twice; give each {key} once, e.g. --{key} {name}:0.5")
                entries[name] = {**old.get(name, {}), "weight": weight}
            data[key] = entries
    for key in ("seed", "runs_dir", "name"):
        if flags.get(key) is not None:
            data[key] = flags[key]
    if flags.get("track"):
        data["track"] = {**_table(data.get("track") or {}, "track"), "trackers": list(flags["track"])}
    for key in ("epochs", "max_steps", "batch_size", "lr", "device", "precision"):
        if flags.get(key) is not None:
            data.setdefault("train", {})
            data["train"] = {**data["train"], key: flags[key]}
    return data


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides to the file layout."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set '{item}' is not KEY=VALUE; write e.g. --set train.lr=3e-4")
        parts = key.strip().split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {key}: '{'.'.join(parts[: i + 1])}' is a value, not a table")
            node = child
        node[parts[-1]] = parse_value(value.strip())
    return raw


def load_experiment(
    path: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> Experiment:
    """Build the experiment from a file, then flags, then --set overrides.

    A file's ``[search]`` table is `mmreg search`'s; a run uses the experiment around it.
    """
    raw = with_task_table(read_file(path) if path is not None else {})
    raw.pop("search", None)
    raw = apply_flags(raw, flags or {})
    raw = apply_overrides(raw, overrides)
    return validate(raw)


def validate(raw: Mapping[str, Any]) -> Experiment:
    """Validate the raw file layout, with one-line errors naming the key."""
    data = _from_file_layout(raw)
    try:
        return Experiment.model_validate(data)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        if loc[-1:] and loc[-1] == "params":
            loc = loc[:-1]
        where = ".".join(p for p in loc if p != "params")
        if err["type"] == "extra_forbidden":
            parent = _schema_at(loc[:-1])
            hint = did_you_mean(loc[-1], parent) if parent else ""
            raise ConfigError(f"unknown setting '{where}'{hint}") from exc
        raise ConfigError(f"setting '{where}': {err['msg'].lower()} (got {err.get('input')!r})") from exc


FLOAT32_MAX = 3.4028234663852886e38


def check_numbers(exp: Experiment) -> None:
    """Refuse a float setting, of the core or of any plugin, that is NaN, infinite or too large for
    float32 (the dtype models compute in): such a value only fails later, deep inside training.

    Raises ConfigError naming the setting as it is written in a file (``loss.siglip.init_scale``).
    """

    def walk(value: Any, where: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, f"{where}.{key}" if where else str(key))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item, where)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ConfigError(f"setting '{where}' is {value}; every setting must be a finite number")
            if abs(value) > FLOAT32_MAX:
                raise ConfigError(f"setting '{where}' is {value:g}, beyond float32 (at most {FLOAT32_MAX:.3g} in size); give a smaller value")

    walk(to_file_layout(exp), "")


def _schema_at(loc: Sequence[str]) -> list[str]:
    model: type[BaseModel] = Experiment
    for part in loc:
        field = model.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)
