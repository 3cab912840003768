"""Registry: name -> factory, with its parameter schema, help and origin plugin."""

from __future__ import annotations

import fnmatch
import functools
import pkgutil
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

from .errors import DuplicateComponent, InvalidParams, PluginLoadError, UnknownComponent, did_you_mean

# A lazy factory reference, "package.module:attr" or "package.module:Class.method": the module is
# imported on first build, so registering (and `mmreg list`) never imports torch or transformers.
REFERENCE = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


@dataclass(frozen=True)
class Kind:
    """One kind of component: its listing key, its label in messages, its hook."""

    key: str  # "fusions": the key in `mmreg list --json` and the CLI
    label: str  # "fusion": the word in messages
    hook: str  # "mmreg_register_fusions"


KINDS: tuple[Kind, ...] = (
    Kind("encoders", "encoder", "mmreg_register_encoders"),
    Kind("fusions", "fusion", "mmreg_register_fusions"),
    Kind("losses", "loss", "mmreg_register_losses"),
    Kind("augmenters", "augmenter", "mmreg_register_augmenters"),
    Kind("peft", "peft strategy", "mmreg_register_peft_strategies"),
    Kind("datasets", "dataset", "mmreg_register_datasets"),
    Kind("tasks", "task", "mmreg_register_tasks"),
    Kind("balancers", "balancer", "mmreg_register_balancers"),
)


def find_kind(word: str) -> Kind:
    """Accept a kind by key or label, singular or plural ("fusion", "fusions")."""
    for kind in KINDS:
        if word in (kind.key, kind.label, kind.label.split()[0]):
            return kind
    raise UnknownComponent("kind", word, [k.key for k in KINDS])


class NoParams(pydantic.BaseModel):
    """The schema of a component that takes no parameters."""

    model_config = pydantic.ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Entry:
    """One registered component: ``target`` is its factory, or a lazy "module:attr" reference to it."""

    kind: Kind
    name: str
    target: Callable[..., Any] | str
    params: type[pydantic.BaseModel]
    plugin: str
    help: str = ""

    @functools.cached_property
    def factory(self) -> Callable[..., Any]:
        """The factory, importing a lazy reference's module on first use (then cached).

        Raises PluginLoadError naming the plugin and the component when the module fails to
        import, lacks the attribute, or holds something that is not callable.
        """
        if not isinstance(self.target, str):
            return self.target
        try:
            obj = pkgutil.resolve_name(self.target)
        except Exception as exc:
            raise PluginLoadError(
                self.plugin, f"its {self.kind.label} '{self.name}' could not be loaded from '{self.target}': {type(exc).__name__}: {exc}"
            ) from exc
        if not callable(obj):
            raise PluginLoadError(self.plugin, f"its {self.kind.label} '{self.name}' at '{self.target}' is not callable")
        return obj

    def describe_params(self) -> list[dict[str, Any]]:
        """The parameters as plain data: name, type, default, help."""
        out = []
        for pname, field in self.params.model_fields.items():
            default = None if field.is_required() else field.get_default(call_default_factory=True)
            out.append(
                {
                    "name": pname,
                    "type": _type_name(field.annotation),
                    "default": default,
                    "required": field.is_required(),
                    "help": field.description or "",
                    "search": search_hint(field),
                }
            )
        return out

    def validate(self, params: Mapping[str, Any]) -> pydantic.BaseModel:
        """Check ``params`` against the schema; unknown keys are errors, not ignored."""
        schema = self.params
        unknown = [k for k in params if k not in schema.model_fields]
        if unknown:
            key = unknown[0]
            known = ", ".join(schema.model_fields) or "none"
            raise InvalidParams(
                f"{self.kind.label} '{self.name}' has no parameter '{key}'"
                f"{did_you_mean(key, schema.model_fields)} (parameters: {known})"
            )
        try:
            return schema.model_validate(dict(params))
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            if not where:  # a check across parameters (a model validator): its own message says which
                message = str(err["msg"]).removeprefix("Value error, ")
                raise InvalidParams(f"{self.kind.label} '{self.name}': {message}") from exc
            raise InvalidParams(
                f"{self.kind.label} '{self.name}' parameter '{where}': {err['msg'].lower()}"
                f" (got {err.get('input')!r})"
            ) from exc


def search_hint(field: pydantic.fields.FieldInfo) -> dict[str, Any] | None:
    """The default search range a schema declares for a field (``json_schema_extra={"search": {...}}``):
    ``{"low", "high", "log"?, "step"?}`` or ``{"choices": [...]}``; used by `mmreg search`."""
    extra = field.json_schema_extra
    return extra.get("search") if isinstance(extra, dict) else None  # type: ignore[return-value]


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


class Registry:
    """The components of one kind. One instance per kind per plugin host; no globals."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(
        self,
        name: str,
        factory: Callable[..., Any] | str,
        *,
        plugin: str,
        params: type | None = None,
        help: str = "",
    ) -> Entry:
        """Record a component; a name already taken by another plugin is an error naming both.

        ``factory`` is a callable, or a "module:attr" reference imported on first build.
        """
        if not isinstance(name, str) or not name:
            raise InvalidParams(f"plugin '{plugin}' registered a {self.kind.label} with no name")
        if isinstance(factory, str) and not REFERENCE.fullmatch(factory):
            raise InvalidParams(
                f"plugin '{plugin}' registered {self.kind.label} '{name}' with factory '{factory}', which is not callable "
                "nor a reference 'package.module:attr'"
            )
        if not (callable(factory) or isinstance(factory, str)):
            raise InvalidParams(f"plugin '{plugin}' registered {self.kind.label} '{name}' with a factory that is not callable")
        if name in self._entries:
            raise DuplicateComponent(self.kind.label, name, self._entries[name].plugin, plugin)
        schema = params if params is not None else NoParams
        if not (isinstance(schema, type) and issubclass(schema, pydantic.BaseModel)):
            raise InvalidParams(
                f"plugin '{plugin}' registered {self.kind.label} '{name}' with params that are not a pydantic model"
            )
        entry = Entry(self.kind, name, factory, schema, plugin, help)
        self._entries[name] = entry
        return entry

    def remove_plugin(self, plugin: str) -> None:
        """Drop every entry a plugin registered (rollback when its loading fails)."""
        self._entries = {n: e for n, e in self._entries.items() if e.plugin != plugin}

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownComponent(self.kind.label, name, self._entries) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def list(self, pattern: str = "*") -> list[Entry]:
        """Entries whose name matches an fnmatch pattern, sorted by name."""
        return [self._entries[n] for n in self.names() if fnmatch.fnmatchcase(n, pattern)]

    def build(self, name: str, params: Mapping[str, Any] | None = None, **context: Any) -> Any:
        """Validate ``params`` and call the factory with them and the kind's context."""
        entry = self.get(name)
        validated = entry.validate(params or {})
        return entry.factory(**validated.model_dump(), **context)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._entries)
