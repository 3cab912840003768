"""docs/plugins.md works as written: its python blocks run in order as one program, its toml blocks parse."""

from __future__ import annotations

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


def test_python_blocks_run_in_order(tmp_path):
    program = tmp_path / "guide.py"
    program.write_text("\n\n".join(blocks("python")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    result = subprocess.run([sys.executable, str(program)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loss OneWayHinge breaks the contract 'symmetric in images and texts'" in result.stdout
    assert not (tmp_path / "runs").exists()  # the run went to its own temporary runs_dir


def test_toml_blocks_parse():
    parsed = [tomllib.loads(body) for body in blocks("toml")]
    assert parsed[0]["search"] == {"fusion.rank": {}, "loss.hinge.margin": {}, "train.lr": {}}
    assert parsed[1]["project"]["entry-points"]["mmreg"] == {"my-fusion": "my_fusion"}
