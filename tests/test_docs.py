"""docs/plugins.md works as written: its python blocks run in order as one program, its toml blocks parse."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(GUIDE.read_text(encoding="utf-8")) if lang == language]


def test_every_block_is_python_toml_or_text():
    languages = {lang for lang, _ in FENCE.findall(GUIDE.read_text(encoding="utf-8"))}
    assert languages == {"python", "toml", "text"}  # a block in any other fence would be neither run nor marked


# Appended to the guide's program: what its task example configured and what its run returned.
EPILOGUE = """
import json as _json
from pathlib import Path as _Path

_Path("task-example.json").write_text(_json.dumps({"task": exp.task.model_dump(), "summary": result}))
"""


def test_python_blocks_run_in_order(tmp_path):
    program = tmp_path / "guide.py"
    program.write_text("\n\n".join([*blocks("python"), EPILOGUE]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    result = subprocess.run([sys.executable, str(program)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loss OneWayHinge breaks the contract 'symmetric in images and texts'" in result.stdout
    assert not (tmp_path / "runs").exists()  # the runs went to their own temporary runs_dir

    example = json.loads((tmp_path / "task-example.json").read_text())
    # the [task] table set the template, --set task.temperature the temperature
    assert example["task"] == {"name": "zero-shot", "params": {"template": "a {} on a plain background", "temperature": 0.5}}
    summary = example["summary"]
    assert summary["task"] == "zero-shot"
    assert summary["best"]["metric"] == "accuracy"  # the task's headline
    described = summary["zero-shot"]  # describe(), under the task's name
    assert described["temperature"] == 0.5 and described["images"] == summary["val_size"] == 8
    assert described["prompts"][0] == "a circle on a plain background" and described["chance"] == 1 / len(described["prompts"])
    assert set(summary["metrics"]) == {"accuracy", "nll"}


def test_toml_blocks_parse():
    parsed = [tomllib.loads(body) for body in blocks("toml")]
    assert parsed[0]["search"] == {"fusion.rank": {}, "loss.hinge.margin": {}, "train.lr": {}}
    assert parsed[1]["project"]["entry-points"]["mmreg"] == {"my-fusion": "my_fusion"}
