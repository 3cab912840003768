"""Registry text in `mmreg list` and `--help` is shown as written (rich markup must not swallow
brackets), and the names help lists come from the registry, not a hard-coded list; all through
real `python -m mmreg` processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_cli import cli

WIDE = {"COLUMNS": "400"}  # no table cell or help line wraps
# A plugin registering a task under a lazy reference that is never built: registering is all `--help` needs.
EXTRA_TASK = """from mmreg import hookimpl


@hookimpl
def mmreg_register_tasks(register):
    register("extra-task", "no_such_module_for_mmreg:Task", help="scores [v, t] pairs")
"""
RUN_HELP_SCRIPT = """
import sys
sys.argv = ["mmreg", "run", "--help"]
import mmreg.cli as c
try:
    c.main()
except SystemExit:
    pass
print("TORCH=%s" % ("torch" in sys.modules))
"""


def registered_tasks(cwd: Path, *plugin: str) -> list[str]:
    result = cli(*plugin, "list", "tasks", "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return [e["name"] for e in json.loads(result.stdout)["tasks"]]


def task_help(cwd: Path, *plugin: str) -> str:
    """The `--task` row of `mmreg run --help`."""
    result = cli(*plugin, "run", "--help", cwd=cwd, env=WIDE)
    assert result.returncode == 0, result.stderr
    return next(line for line in result.stdout.splitlines() if "--task" in line)


def test_list_shows_bracketed_help_verbatim(tmp_path):
    result = cli("list", cwd=tmp_path, env=WIDE)
    assert result.returncode == 0, result.stderr
    assert "[v, t, v*t, |v-t|]" in result.stdout, result.stdout


def test_show_keeps_brackets_in_help_and_types(tmp_path):
    result = cli("show", "fusions", "concat", cwd=tmp_path, env=WIDE)
    assert result.returncode == 0, result.stderr
    assert "[v, t, v*t, |v-t|]" in result.stdout and "the plain [v, t]" in result.stdout, result.stdout


def test_run_help_names_every_registered_task(tmp_path):
    tasks = registered_tasks(tmp_path)
    assert {"retrieval", "classification", "vqa"} <= set(tasks)
    line = task_help(tmp_path)
    assert all(task in line.replace(",", " ").split() for task in tasks), line
    assert "[default: the task the losses imply, Task.default_for]" in line


def test_run_help_names_a_plugins_task(tmp_path):
    (tmp_path / "extra_task.py").write_text(EXTRA_TASK)
    assert "extra-task" in registered_tasks(tmp_path, "--plugin", "extra_task.py")
    assert "extra-task" in task_help(tmp_path, "--plugin", "extra_task.py")
    listed = cli("--plugin", "extra_task.py", "list", "tasks", cwd=tmp_path, env=WIDE)
    assert "scores [v, t] pairs" in listed.stdout, listed.stdout


def test_list_help_names_every_kind(tmp_path):
    result = cli("list", "--help", cwd=tmp_path, env=WIDE)
    assert result.returncode == 0, result.stderr
    assert "encoders, fusions, losses, augmenters, peft, datasets, tasks or balancers." in result.stdout


def test_run_help_loads_plugins_without_importing_torch(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}, **WIDE}
    result = subprocess.run([sys.executable, "-c", RUN_HELP_SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--task" in result.stdout and result.stdout.strip().splitlines()[-1] == "TORCH=False", result.stdout
