"""The search space of an experiment file's ``[search]`` table: what can be drawn, checked before any trial.

Keys are dotted settings as `--set` writes them. A value is one dimension:

    fusion = ["none", "gated", "cross-attention"]          # a choice of plugin
    loss = [{infonce = {}}, {clip = {weight = 0.7}, ce = {weight = 0.3}}]  # a choice of loss tables
    "train.lr" = {low = 1e-5, high = 1e-2, log = true}     # a float (int when both ends are ints; step)
    "fusion.heads" = {choices = [2, 4]}                    # a categorical
    "loss.infonce.temperature" = {}                        # the range the plugin declares

A parameter of a component is drawn only when the drawn component has it
(``fusion.heads`` only for attention fusions, ``loss.ce.weight`` only when ce is
in the drawn loss table): Optuna's define-by-run spaces make it conditional.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import MULTI, SINGLE, Experiment, default_name, validate, with_task_table
from .errors import ConfigError, MmregError, did_you_mean
from .registry import find_kind, search_hint

if TYPE_CHECKING:
    import optuna

    from .plugins import PluginHost

RANGE_KEYS = {"low", "high", "log", "step"}
KIND_OF = {
    "encoder": "encoders", "fusion": "fusions", "peft": "peft", "dataset": "datasets", "task": "tasks", "loss": "losses", "augment": "augmenters", "balance": "balancers",
}  # fmt: skip


def _label(value: Any) -> str | int | float | bool:
    """Optuna categoricals hold plain values; a table of losses is held as its compact text, an empty
    one (no balancer) as "(none)"."""
    if isinstance(value, Mapping) and not value:
        return "(none)"
    if isinstance(value, Mapping):
        return "+".join(f"{name}{json.dumps(table, sort_keys=True) if table else ''}" for name, table in value.items())
    return value


@dataclass(frozen=True)
class Dimension:
    """One searched setting: a categorical over ``choices``, or a float/int range."""

    key: str
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.low, bool)

    @property
    def values(self) -> list[Any]:
        """Every value the dimension can give (the ends only, for a continuous range)."""
        return list(self.choices) if self.choices else [self.low, self.high]

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.choices:
            labels = [_label(c) for c in self.choices]
            return self.choices[labels.index(trial.suggest_categorical(self.key, labels))]
        if self.is_int:
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)  # type: ignore[arg-type]
        value = trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)  # type: ignore[arg-type]
        return round(value, 12) if self.step else value  # 0.1 + 2 * 0.1 is written 0.3, not 0.30000000000000004

    def grid(self) -> list[Any]:
        """The values of a grid search: every choice, or every step of a stepped range."""
        if self.choices:
            return [_label(c) for c in self.choices]
        if self.step is None and not self.is_int:
            raise ConfigError(f"search '{self.key}': a grid search needs choices or a step; add step = ... or use --sampler tpe")
        step = self.step or 1
        count = int(round((self.high - self.low) / step)) + 1  # type: ignore[operator]
        return [round(self.low + i * step, 12) for i in range(count)]  # type: ignore[operator]

    @property
    def picks_component(self) -> bool:
        return self.key in SINGLE or self.key in MULTI


def set_value(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key in the file layout; choosing another component drops the old one's parameters."""
    if key in SINGLE:
        old = raw.get(key) or {}
        raw[key] = dict(old) if old.get("name") == value else {"name": value}
        return
    if key in MULTI:
        raw[key] = copy.deepcopy(dict(value))
        return
    parts, node = key.split("."), raw
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = dict(child) if isinstance(child, Mapping) else {}
        node = child
    node[parts[-1]] = value


def chosen(raw: Mapping[str, Any], key: str) -> list[str]:
    """The component names a file layout chooses for ``key`` (one for encoder, fusion, ...; several for loss)."""
    if key in SINGLE:
        return [(raw.get(key) or {}).get("name", default_name(key))]
    return list(raw[key]) if key in raw else list(Experiment.model_fields[key].default_factory())  # type: ignore[misc]


def owner(key: str) -> tuple[str, str | None, str] | None:
    """(component key, loss/augment name or None, parameter) for a component's parameter, else None.

    A key may reach inside a parameter (``peft.vision.r``): the parameter is then ``vision``.
    """
    parts = key.split(".")
    if parts[0] in SINGLE and len(parts) >= 2:
        return parts[0], None, parts[1]
    if parts[0] in MULTI and len(parts) >= 3:
        return parts[0], parts[1], parts[2]
    return None


def applies(key: str, raw: Mapping[str, Any], host: PluginHost) -> bool:
    """Whether the component owning ``key`` is in the drawn experiment and has that parameter."""
    own = owner(key)
    if own is None:
        return True
    section, name, param = own
    if name is not None:
        return name in chosen(raw, section) and (param == "weight" or _has_param(host, section, name, param))
    return _has_param(host, section, chosen(raw, section)[0], param)


def _has_param(host: PluginHost, section: str, name: str, param: str) -> bool:
    registry = host.registry(find_kind(KIND_OF[section]))
    return name in registry and param in registry.get(name).params.model_fields


class Space:
    """The dimensions of a ``[search]`` table over a base experiment (file layout), checked against the plugins."""

    def __init__(self, table: Mapping[str, Any], base: Mapping[str, Any], host: PluginHost) -> None:
        """Raises ConfigError for an unknown key, a malformed range, or any value its setting refuses."""
        if not table:
            raise ConfigError("the experiment has no [search] table; add one, e.g. [search] fusion = [\"none\", \"gated\"]")
        self.base, self.host = copy.deepcopy(with_task_table(base)), host
        # Choices of plugin first: which parameters exist, and their declared ranges, depend on them.
        self.dims: list[Dimension] = []
        for key in sorted(table, key=lambda k: k not in SINGLE and k not in MULTI):
            self.dims.append(self._dimension(key, table[key]))
        for dim in self.dims:
            self._check(dim)

    # -- parsing ---------------------------------------------------------------

    def _dimension(self, key: str, spec: Any) -> Dimension:
        if isinstance(spec, list):
            return self._choices(key, spec)
        if not isinstance(spec, Mapping):
            raise ConfigError(f"search '{key}': give a list of choices or a table {{low, high}}, got {spec!r}")
        if "choices" in spec:
            extra = set(spec) - {"choices"}
            if extra:
                raise ConfigError(f"search '{key}': 'choices' goes alone, drop {', '.join(sorted(extra))}")
            return self._choices(key, spec["choices"])
        unknown = set(spec) - RANGE_KEYS
        if unknown:
            word = sorted(unknown)[0]
            raise ConfigError(f"search '{key}': unknown word '{word}'{did_you_mean(word, RANGE_KEYS | {'choices'})}; use low, high, log, step or choices")
        if not spec:
            return self._dimension(key, self._declared(key))
        if "low" not in spec or "high" not in spec:
            raise ConfigError(f"search '{key}': a range needs both low and high, e.g. {{low = 1e-4, high = 1e-2, log = true}}")
        low, high = spec["low"], spec["high"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)) or low >= high:
            raise ConfigError(f"search '{key}': low must be a number below high (got low={low!r}, high={high!r})")
        if spec.get("log") and low <= 0:
            raise ConfigError(f"search '{key}': a log range needs low > 0 (got {low!r})")
        if spec.get("log") and spec.get("step"):
            raise ConfigError(f"search '{key}': give log or step, not both")
        return Dimension(key, low=low, high=high, log=bool(spec.get("log", False)), step=spec.get("step"))

    def _choices(self, key: str, values: Any) -> Dimension:
        if not isinstance(values, list) or not values:
            raise ConfigError(f"search '{key}': choices must be a non-empty list")
        if key in MULTI and not all(isinstance(v, Mapping) for v in values):
            values = [{v: {}} if isinstance(v, str) else v for v in values]
        labels = [_label(v) for v in values]
        if len(set(map(str, labels))) != len(labels):
            raise ConfigError(f"search '{key}': a choice is listed twice; list each once")
        return Dimension(key, choices=tuple(values))

    def _declared(self, key: str) -> dict[str, Any]:
        """The range the owning plugin (or the core) declares for a setting named without one."""
        own = owner(key)
        if own is None:
            field = _core_field(key)
            hint = search_hint(field) if field is not None else None
        else:
            section, name, param = own
            registry = self.host.registry(find_kind(KIND_OF[section]))
            names = [name] if name else self._candidates(section)
            nested = len(key.split(".")) > (3 if name else 2)
            hints = [] if nested else [search_hint(registry.get(n).params.model_fields[param]) for n in names if _has_param(self.host, section, n, param)]
            hint = next((h for h in hints if h), None)
        if hint is None:
            raise ConfigError(f"search '{key}': no default range is declared for it; give one, e.g. {{low = ..., high = ...}} or {{choices = [...]}}")
        return dict(hint)

    # -- checking ----------------------------------------------------------------

    def _candidates(self, section: str) -> list[str]:
        """Every component name that some draw can put in ``section``."""
        for dim in self.dims:
            if dim.key == section:
                return sorted({n for v in dim.choices for n in chosen({section: v} if section in MULTI else {section: {"name": v}}, section)})
        return chosen(self.base, section)

    def _check(self, dim: Dimension) -> None:
        """Validate every value of ``dim`` in every context that can draw it; raise ConfigError naming the value."""
        own = owner(dim.key)
        contexts: list[dict[str, Any]] = [copy.deepcopy(self.base)]
        if own is not None:
            section, name, param = own
            names = [name] if name else self._candidates(section)
            if name is not None and name not in self._candidates(section):
                raise ConfigError(f"search '{dim.key}': {section} '{name}' is never chosen; add it to the {section} table or its choices")
            having = [n for n in names if param == "weight" or _has_param(self.host, section, n, param)]
            if not having:
                params = sorted({p for n in names if n in self.host.registry(find_kind(KIND_OF[section])) for p in self.host.registry(find_kind(KIND_OF[section])).get(n).params.model_fields})
                raise ConfigError(f"search '{dim.key}': no {section} among {', '.join(names)} has a parameter '{param}'{did_you_mean(param, params)}")
            contexts = []
            for n in having:
                raw = copy.deepcopy(self.base)
                if name is None:
                    set_value(raw, section, n)
                elif n not in chosen(raw, section):
                    set_value(raw, section, {n: {}})
                contexts.append(raw)
        for raw in contexts:
            for value in dim.values:
                trial_raw = copy.deepcopy(raw)
                set_value(trial_raw, dim.key, value)
                try:
                    from .api import resolve

                    resolve(validate(trial_raw), self.host)
                except MmregError as exc:
                    raise ConfigError(f"search '{dim.key}': {value!r} is not allowed: {exc}") from exc

    # -- drawing -------------------------------------------------------------------

    def draw(self, trial: optuna.Trial) -> dict[str, Any]:
        """The file layout of one trial: every dimension that applies to what was drawn before it."""
        raw = copy.deepcopy(self.base)
        for dim in self.dims:
            if applies(dim.key, raw, self.host):
                set_value(raw, dim.key, dim.suggest(trial))
        return raw

    def grid(self) -> dict[str, list[Any]]:
        return {dim.key: dim.grid() for dim in self.dims}


def _core_field(key: str) -> Any:
    """The pydantic field of a core setting (``train.lr``), or None."""
    model: Any = Experiment
    parts = key.split(".")
    for part in parts[:-1]:
        field = model.model_fields.get(part)
        model = field.annotation if field is not None else None
        if not isinstance(model, type):
            return None
    return model.model_fields.get(parts[-1])
