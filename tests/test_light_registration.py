"""Registering plugins stays light: `mmreg list` and `mmreg show` import no torch, and a lazy
factory reference that fails to import is listed and shown like any other (it fails when built)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from mmreg.plugins import load_plugins

HEAVY = ("torch", "transformers", "timm", "peft", "accelerate", "albumentations", "cv2", "optuna", "numpy")

# `mmreg list` (table and JSON) and `mmreg show` of every listed component, in one process,
# as the executable runs them; then which heavy libraries that process imported.
CLI = r"""
import contextlib, io, json, sys
from mmreg.cli import main

def cli(*args):
    out = io.StringIO()
    sys.argv = ["mmreg", *args]
    with contextlib.redirect_stdout(out):
        main()
    return out.getvalue()

cli("list")
listed = json.loads(cli("list", "--json"))
cli("show", "fusions", "gated")
shown = [json.loads(cli("show", kind, e["name"], "--json"))["name"] for kind, entries in listed.items() for e in entries]
heavy = sorted(m for m in HEAVY if m in sys.modules)
print(json.dumps({"listed": sum(map(len, listed.values())), "shown": len(shown), "heavy": heavy}))
"""


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}


def test_list_and_show_of_every_builtin_import_no_torch():
    code = f"HEAVY = {HEAVY!r}\n{CLI}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    builtins = sum(len(registry) for registry in load_plugins().registries.values())
    assert report["listed"] == report["shown"] == builtins >= 30
    assert report["heavy"] == [], (
        f"`mmreg list`/`mmreg show` imported {report['heavy']}: a plugin module named by an entry point imports it "
        "at its top; register a 'module:attr' reference and keep the import in that module (README: Writing a plugin)"
    )


def test_a_broken_reference_still_lists_and_shows(tmp_path):
    (tmp_path / "lazyfail.py").write_text(
        "from mmreg import hookimpl\n\n\n@hookimpl\ndef mmreg_register_fusions(register):\n"
        "    register('broken', 'no_such_module_for_mmreg:Fusion', help='its module is missing')\n"
    )

    def mmreg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mmreg", "--plugin", "lazyfail.py", *args], cwd=tmp_path, env=clean_env(),
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    listing = mmreg("list", "fusions", "--json")
    assert listing.returncode == 0 and "broken" in [e["name"] for e in json.loads(listing.stdout)["fusions"]]
    assert "gated" in listing.stdout  # the other plugins keep working
    shown = mmreg("show", "fusions", "broken")
    assert shown.returncode == 0 and "its module is missing" in shown.stdout
    # building it is refused by the plugin's name: tests/reliability's case plugin-lazy-reference-fails


def test_readme_light_plugin_example_imports_its_class_on_first_build(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    [light] = re.findall(r"```python\n(# my_package/bilinear_plugin\.py.*?)```", readme, re.S)
    [heavy] = re.findall(r"```python\n(# my_fusions\.py\n.*?)```", readme, re.S)
    package = tmp_path / "my_package"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "bilinear_plugin.py").write_text(light)
    (package / "bilinear.py").write_text(heavy.split("@hookimpl")[0])  # the class, without its own registration
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        host = load_plugins(["my_package.bilinear_plugin"], entry_points=False)
        assert "my_package.bilinear" not in sys.modules
        assert host.registry("fusions").get("bilinear").describe_params()[0]["default"] == 16
        fusion = host.registry("fusions").build("bilinear", {"rank": 4}, dim=8)
        assert type(fusion).__module__ == "my_package.bilinear" and fusion.out_dim == 4
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == "my_package"]:
            del sys.modules[name]
