"""The README's component table is the registry's, and `mmreg list --markdown` prints it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmreg.catalog import BEGIN, END, builtin_entries, markdown_table, with_table
from mmreg.errors import ConfigError
from mmreg.plugins import load_plugins
from test_cli import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_component_table_is_the_registry():
    text = README.read_text(encoding="utf-8")
    table = markdown_table(builtin_entries(load_plugins()))
    assert with_table(text, table) == text, "README's component table is out of date: run `python -m mmreg.catalog README.md`"


def test_builtin_table_has_every_builtin_and_no_third_party(tmp_path):
    (tmp_path / "extra_fusions.py").write_text(
        "from mmreg import hookimpl\nfrom mmreg.components import Fusion\n\n"
        "@hookimpl\ndef mmreg_register_fusions(register):\n    register('extra', Fusion, help='a | b')\n"
    )
    host = load_plugins([str(tmp_path / "extra_fusions.py")])
    names = [(e.kind.key, e.name) for e in builtin_entries(host)]
    assert ("fusions", "extra") not in names and ("fusions", "gated") in names and ("tasks", "vqa") in names
    row = markdown_table([host.registry("fusions").get("extra")]).splitlines()[2]
    assert row == r"| fusion | `extra` | extra_fusions | - | a \| b |"  # a pipe in help stays inside its cell


def test_with_table_replaces_only_between_the_markers():
    text = f"intro\n{BEGIN}\nold table\n{END}\noutro\n"
    assert with_table(text, "| new |\n") == f"intro\n{BEGIN}\n| new |\n{END}\noutro\n"
    with pytest.raises(ConfigError, match="markers"):
        with_table("no markers here", "| new |\n")


def test_list_markdown_prints_the_table(tmp_path):
    result = cli("list", "fusions", "--markdown", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "| kind | name | plugin | parameters | what it is |"
    assert [line.split(" | ")[1] for line in lines[2:]] == ["`concat`", "`cross-attention`", "`gated`", "`none`"]
    assert "| fusion | `gated` | fusion-gated | `heads`, `layers`, `dropout`, `ffn_mult` |" in result.stdout
