"""Registry: registration, lookup with did-you-mean, fnmatch listing, schema validation."""

from __future__ import annotations

import sys

import pytest
from pydantic import BaseModel, ConfigDict, Field

from mmreg.errors import DuplicateComponent, InvalidParams, PluginLoadError, UnknownComponent
from mmreg.registry import KINDS, Registry, find_kind


class P(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = Field(8, ge=1, description="the width", json_schema_extra={"search": {"low": 1, "high": 16}})
    name: str = "x"


def make(**kw):
    return kw


@pytest.fixture
def reg() -> Registry:
    r = Registry(find_kind("fusions"))
    r.add("cross-attention", make, plugin="a", params=P, help="h")
    r.add("concat", make, plugin="a")
    r.add("gated", make, plugin="b", params=P)
    return r


def test_build_validates_fills_defaults_and_passes_context(reg):
    assert reg.build("gated", {"width": 3}, dim=5) == {"width": 3, "name": "x", "dim": 5}
    assert reg.build("concat", dim=2) == {"dim": 2}


def test_unknown_name_suggests_the_closest(reg):
    with pytest.raises(UnknownComponent) as err:
        reg.get("gatd")
    assert str(err.value) == "unknown fusion 'gatd'; did you mean 'gated'? (known: concat, cross-attention, gated)"


def test_unknown_name_without_a_close_one_has_no_suggestion(reg):
    assert "did you mean" not in str(pytest.raises(UnknownComponent, reg.get, "zzzzzz").value)


def test_duplicate_names_both_plugins(reg):
    with pytest.raises(DuplicateComponent, match="'gated' is registered by both plugin 'b' and plugin 'c'"):
        reg.add("gated", make, plugin="c")


def test_bad_params_are_one_line_errors(reg):
    with pytest.raises(InvalidParams, match="has no parameter 'widht'; did you mean 'width'"):
        reg.build("gated", {"widht": 2})
    with pytest.raises(InvalidParams, match="parameter 'width'.*greater than or equal to 1"):
        reg.build("gated", {"width": 0})
    with pytest.raises(InvalidParams, match="has no parameter 'width'.*parameters: none"):
        reg.build("concat", {"width": 1})


def test_list_filters_with_fnmatch_and_sorts(reg):
    assert [e.name for e in reg.list()] == ["concat", "cross-attention", "gated"]
    assert [e.name for e in reg.list("c*")] == ["concat", "cross-attention"]
    assert reg.names() == ["concat", "cross-attention", "gated"]


def test_remove_plugin_rolls_back_its_entries(reg):
    reg.remove_plugin("a")
    assert reg.names() == ["gated"]


def test_describe_params_gives_type_default_help(reg):
    described = reg.get("gated").describe_params()
    assert described[0] == {
        "name": "width", "type": "int", "default": 8, "required": False, "help": "the width", "search": {"low": 1, "high": 16},
    }  # fmt: skip


def test_params_must_be_a_pydantic_model_and_factory_callable(reg):
    with pytest.raises(InvalidParams, match="not a pydantic model"):
        reg.add("bad", make, plugin="z", params=dict)
    with pytest.raises(InvalidParams, match="not callable"):
        reg.add("bad", "make", plugin="z")  # type: ignore[arg-type]


def test_find_kind_accepts_singular_and_plural():
    assert find_kind("fusion") is find_kind("fusions")
    assert find_kind("peft").key == "peft"
    assert {k.key for k in KINDS} == {"encoders", "fusions", "losses", "augmenters", "peft", "datasets", "tasks", "balancers"}
    with pytest.raises(UnknownComponent, match="did you mean 'losses'"):
        find_kind("loses")


LAZY = '''
calls = []


class Scorer:
    """Builds like a fusion; ``create`` is the classmethod form some encoders register."""

    def __init__(self, **kw):
        self.kw = kw

    @classmethod
    def create(cls, **kw):
        return cls(**kw, via="create")


NOT_CALLABLE = 3
'''


@pytest.fixture
def lazy_module(tmp_path, monkeypatch):
    """A module on sys.path that no test has imported yet: its name is unique to the test."""
    name = f"lazy_target_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(LAZY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_a_reference_is_imported_on_first_build_and_cached(lazy_module):
    r = Registry(find_kind("fusions"))
    r.add("scorer", f"{lazy_module}:Scorer", plugin="a", params=P)
    r.add("created", f"{lazy_module}:Scorer.create", plugin="a")
    assert lazy_module not in sys.modules  # registering and describing import nothing
    assert r.get("scorer").describe_params()[0]["name"] == "width"
    built = r.build("scorer", {"width": 2}, dim=4)
    assert type(built).__name__ == "Scorer" and built.kw == {"width": 2, "name": "x", "dim": 4}
    assert r.get("scorer").factory is sys.modules[lazy_module].Scorer  # cached, resolved once
    assert r.build("created", dim=1).kw == {"dim": 1, "via": "create"}


def test_a_reference_that_fails_names_the_plugin_and_component(lazy_module):
    r = Registry(find_kind("fusions"))
    r.add("gone", "no_such_module_for_mmreg:Thing", plugin="p1")
    r.add("typo", f"{lazy_module}:Scorr", plugin="p2")
    r.add("value", f"{lazy_module}:NOT_CALLABLE", plugin="p3")
    with pytest.raises(PluginLoadError, match=r"plugin 'p1' failed to load: its fusion 'gone' could not be loaded "
                       r"from 'no_such_module_for_mmreg:Thing': ModuleNotFoundError"):  # fmt: skip
        r.build("gone", dim=1)
    with pytest.raises(PluginLoadError, match=r"plugin 'p2'.*fusion 'typo'.*AttributeError.*Scorr"):
        r.build("typo", dim=1)
    with pytest.raises(PluginLoadError, match=r"plugin 'p3'.*fusion 'value' at .*:NOT_CALLABLE' is not callable"):
        r.build("value", dim=1)
    with pytest.raises(InvalidParams, match="factory 'pkg.mod:', which is not callable nor a reference"):
        r.add("half", "pkg.mod:", plugin="p4")
