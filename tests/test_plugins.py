"""The plugin host: entry points, isolation of broken plugins, duplicates, strict mode, typos."""

from __future__ import annotations

import importlib.metadata as md
import tomllib
import types
from pathlib import Path

import pytest
from pydantic import BaseModel

from mmreg import hookimpl
from mmreg.errors import PluginLoadError
from mmreg.plugins import PluginHost, load_plugins

ROOT = Path(__file__).resolve().parents[1]


def module(name: str, **hooks) -> types.ModuleType:
    mod = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(mod, hook_name, hookimpl(fn))
    return mod


def registers_fusion(fusion_name: str):
    def mmreg_register_fusions(register):
        register(fusion_name, dict, help="test fusion")

    return mmreg_register_fusions


def test_builtins_load_from_entry_points_with_their_origin():
    host = load_plugins()
    assert not host.failures
    assert host.registry("fusions").get("gated").plugin == "fusion-gated"
    assert host.registry("encoders").get("clip").plugin == "encoder-clip"
    for kind, name in [("losses", "infonce"), ("augmenters", "none"), ("peft", "full"), ("datasets", "shapes"), ("fusions", "none")]:
        assert name in host.registry(kind)


def test_every_plugin_module_has_an_entry_point():
    """Entry points are install metadata: a new module under plugins/ needs one (and a reinstall),
    unless it is the implementation a built-in's lazy "module:attr" reference names."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["mmreg"]
    modules = {
        "mmreg_plugins." + ".".join(p.relative_to(ROOT / "plugins").with_suffix("").parts)
        for p in (ROOT / "plugins").rglob("*.py")
        if p.name != "__init__.py" and not p.name.startswith("_")
    }
    entries = [e for registry in load_plugins().registries.values() for e in registry]
    referenced = {e.target.partition(":")[0] for e in entries if isinstance(e.target, str)}
    assert modules == set(declared.values()) | {m for m in referenced if m.startswith("mmreg_plugins.")}
    installed = {ep.value for ep in md.entry_points(group="mmreg")}
    assert set(declared.values()) <= installed, "reinstall with `pip install -e .` to refresh entry points"


def test_a_plugin_that_raises_fails_alone_and_is_rolled_back():
    host = PluginHost()
    host.register_object("good", module("good", mmreg_register_fusions=registers_fusion("a")))

    def half_then_raise(register):
        register("b", dict)
        raise RuntimeError("boom")

    host.register_object("bad", module("bad", mmreg_register_fusions=half_then_raise))
    assert host.registry("fusions").names() == ["a"]  # 'b' rolled back
    [failure] = host.failures
    assert failure.name == "bad" and "RuntimeError: boom" in failure.error
    assert not host.pm.has_plugin("bad")


def test_a_module_that_fails_to_import_is_reported_by_name(tmp_path):
    bad = tmp_path / "exploding.py"
    bad.write_text("raise ImportError('missing dependency xyz')\n")
    host = PluginHost()
    host.load_module(str(bad))
    host.register_object("good", module("good", mmreg_register_fusions=registers_fusion("a")))
    [failure] = host.failures
    assert failure.name == "exploding" and "missing dependency xyz" in failure.error
    assert "a" in host.registry("fusions")


def test_duplicate_name_fails_the_second_plugin_naming_both():
    host = PluginHost()
    host.register_object("first", module("first", mmreg_register_fusions=registers_fusion("gated")))
    host.register_object("second", module("second", mmreg_register_fusions=registers_fusion("gated")))
    assert host.registry("fusions").get("gated").plugin == "first"
    [failure] = host.failures
    assert failure.name == "second"
    assert "'first'" in failure.error and "'second'" in failure.error


def test_strict_mode_reraises():
    host = PluginHost(strict=True)
    with pytest.raises(RuntimeError, match="boom"):
        host.register_object("bad", module("bad", mmreg_register_fusions=lambda register: (_ for _ in ()).throw(RuntimeError("boom"))))


def test_misspelled_hook_is_refused_with_a_suggestion():
    host = PluginHost()
    host.register_object("typo", module("typo", mmreg_register_fusion=registers_fusion("x")))
    [failure] = host.failures
    assert "unknown hook 'mmreg_register_fusion'" in failure.error
    assert "did you mean 'mmreg_register_fusions'" in failure.error


def test_params_schema_is_recorded_with_the_plugin():
    class Params(BaseModel):
        k: int = 3

    def hook(register):
        register("mine", lambda k, dim: (k, dim), params=Params, help="mine")

    host = PluginHost()
    host.register_object("third", module("third", mmreg_register_fusions=hook))
    assert host.registry("fusions").build("mine", {"k": 5}, dim=2) == (5, 2)
    assert host.registry("fusions").get("mine").plugin == "third"


def test_env_adds_and_disables_plugins(tmp_path, monkeypatch):
    plugin = tmp_path / "extra_fusion.py"
    plugin.write_text(
        "from mmreg import hookimpl\n"
        "@hookimpl\n"
        "def mmreg_register_fusions(register):\n"
        "    register('extra', dict)\n"
    )
    monkeypatch.setenv("MMREG_PLUGINS", str(plugin))
    monkeypatch.setenv("MMREG_DISABLE_PLUGINS", "fusion-gated")
    host = load_plugins()
    assert host.registry("fusions").get("extra").plugin == "extra_fusion"
    assert "gated" not in host.registry("fusions")


def test_a_missing_named_plugin_module_is_an_error():
    with pytest.raises(PluginLoadError, match="no_such_module_xyz"):
        load_plugins(["no_such_module_xyz"])


def test_loading_the_same_plugin_twice_is_refused():
    host = PluginHost()
    mod = module("m", mmreg_register_fusions=registers_fusion("a"))
    host.register_object("m", mod)
    host.register_object("m", mod)
    assert "already loaded" in host.failures[0].error
    assert host.registry("fusions").names() == ["a"]
