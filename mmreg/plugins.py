"""The plugin host: loads built-in and third-party plugins and fills the registries.

Built-ins are entry points in the ``mmreg`` group, exactly like a third party's.
Each entry point is loaded on its own: one that fails is recorded with its
error and every other plugin keeps working (``MMREG_STRICT_PLUGINS=1`` re-raises
instead, for plugin authors).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import MmregError, PluginLoadError, did_you_mean
from .registry import KINDS, Kind, Registry

GROUP = "mmreg"


@dataclass(frozen=True)
class PluginInfo:
    """What `mmreg plugins list` shows for one plugin."""

    name: str
    module: str
    source: str  # "entry point (dist X)" or "--plugin / MMREG_PLUGINS"
    version: str | None
    error: str | None = None


@dataclass
class PluginHost:
    """A plugin manager and one registry per kind. Build a fresh one per test."""

    pm: pluggy.PluginManager = field(default_factory=lambda: _new_manager())
    registries: dict[str, Registry] = field(default_factory=lambda: {k.key: Registry(k) for k in KINDS})
    plugins: list[PluginInfo] = field(default_factory=list)
    strict: bool = False

    # -- loading -----------------------------------------------------------

    def load_entry_points(self, group: str = GROUP, disabled: Iterable[str] = ()) -> None:
        """Load every entry point of ``group`` one at a time, mmreg's own first."""
        blocked = set(disabled)
        origins: dict[int, tuple[str | None, str | None]] = {}

        def origin(ep: md.EntryPoint) -> tuple[str | None, str | None]:
            """The distribution's name and version, read once: each access re-parses its metadata."""
            if ep.dist is None:
                return None, None
            if id(ep.dist) not in origins:
                meta = ep.dist.metadata
                origins[id(ep.dist)] = (meta["Name"], meta["Version"])
            return origins[id(ep.dist)]

        points = sorted(md.entry_points(group=group), key=lambda ep: (origin(ep)[0] != "mmreg", ep.name))
        for ep in points:
            if ep.name in blocked or ep.value in blocked:
                continue
            dist, version = origin(ep)
            source = f"entry point ({dist})" if dist else "entry point"
            self._add(ep.name, ep.value, source, version, lambda ep=ep: ep.load())

    def load_module(self, spec: str) -> None:
        """Load a plugin named on the command line: a module name or a path to a .py file."""
        name = Path(spec).stem if spec.endswith(".py") else spec
        self._add(name, spec, "--plugin / MMREG_PLUGINS", None, lambda: _import(spec))

    def register_object(self, name: str, obj: Any, source: str = "in-process") -> None:
        """Register an already-imported module or object as a plugin (tests, notebooks)."""
        self._add(name, getattr(obj, "__name__", name), source, None, lambda: obj)

    def _add(self, name: str, target: str, source: str, version: str | None, load: Any) -> None:
        if self.pm.has_plugin(name):  # refused before the rollback below, which would undo the first one
            error = MmregError(f"a plugin named '{name}' is already loaded")
            if self.strict:
                raise error
            self.plugins.append(PluginInfo(name, target, source, version, str(error)))
            return
        try:
            obj = load()
            self._check_hooks(obj)
            self.pm.register(obj, name=name)
            try:
                self._collect(name)
            except BaseException:
                self.pm.unregister(name=name)
                raise
        except Exception as exc:
            for registry in self.registries.values():
                registry.remove_plugin(name)
            if self.strict:
                raise
            detail = str(exc) if isinstance(exc, MmregError) else f"{type(exc).__name__}: {exc}"
            self.plugins.append(PluginInfo(name, target, source, version, detail))
            return
        self.plugins.append(PluginInfo(name, target, source, version))

    def _check_hooks(self, obj: Any) -> None:
        """Refuse a plugin whose hook implementation names no hook (a typo would be silently ignored)."""
        known = [n for n in dir(hookspecs) if n.startswith("mmreg_")]
        for attr in dir(obj):
            if attr.startswith("mmreg_") and self.pm.parse_hookimpl_opts(obj, attr) is not None and attr not in known:
                raise MmregError(f"it implements unknown hook '{attr}'{did_you_mean(attr, known)}")

    def _collect(self, plugin: str) -> None:
        """Call each registration hook of one plugin with a `register` bound to it."""
        for kind in KINDS:
            for impl in getattr(self.pm.hook, kind.hook).get_hookimpls():
                if impl.plugin_name == plugin:
                    impl.function(register=_bound_register(self.registries[kind.key], plugin))

    # -- queries -----------------------------------------------------------

    def registry(self, kind: str | Kind) -> Registry:
        return self.registries[kind.key if isinstance(kind, Kind) else kind]

    @property
    def failures(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error]


def _bound_register(registry: Registry, plugin: str) -> hookspecs.Register:
    def register(name: str, factory: Any, *, params: type | None = None, help: str = "") -> None:
        registry.add(name, factory, plugin=plugin, params=params, help=help)

    return register


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def _import(spec: str) -> ModuleType:
    if spec.endswith(".py"):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"no plugin file {path}")
        modname = f"mmreg_local_plugin_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(modname, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[modname] = module
        module_spec.loader.exec_module(module)
        return module
    return importlib.import_module(spec)


def _env_list(var: str) -> list[str]:
    return [s.strip() for s in os.environ.get(var, "").split(",") if s.strip()]


def load_plugins(extra: Iterable[str] = (), *, entry_points: bool = True) -> PluginHost:
    """A host with every installed plugin, plus ``extra`` and ``MMREG_PLUGINS`` modules.

    A module named in ``extra`` or ``MMREG_PLUGINS`` that fails to load raises
    PluginLoadError: the user asked for it. ``MMREG_DISABLE_PLUGINS``
    (comma-separated entry-point names) blocks plugins;
    ``MMREG_STRICT_PLUGINS=1`` turns a failing plugin into an exception.
    """
    host = PluginHost(strict=os.environ.get("MMREG_STRICT_PLUGINS", "") not in ("", "0"))
    if entry_points:
        host.load_entry_points(disabled=_env_list("MMREG_DISABLE_PLUGINS"))
    for spec in [*_env_list("MMREG_PLUGINS"), *extra]:
        host.load_module(spec)
        failed = host.plugins[-1]
        if failed.error:  # named by the user: an error, as `pytest -p` treats it; isolation is for installed ones
            raise PluginLoadError(failed.name, f"{failed.error}; check the name or path given to --plugin / MMREG_PLUGINS")
    return host


__all__ = ["GROUP", "PluginHost", "PluginInfo", "load_plugins"]
