"""The README's plugin example works as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from mmreg.components import Modality
from mmreg.plugins import load_plugins

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_plugin_example_registers_and_scores(tmp_path):
    blocks = re.findall(r"```python\n(# my_fusions\.py\n.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1
    (tmp_path / "my_fusions.py").write_text(blocks[0])
    host = load_plugins([str(tmp_path / "my_fusions.py")])
    assert not host.failures
    entry = host.registry("fusions").get("bilinear")
    assert entry.plugin == "my_fusions" and entry.describe_params()[0]["default"] == 16
    fusion = host.registry("fusions").build("bilinear", {"rank": 4}, dim=8)
    scores = fusion.score(Modality(pooled=torch.randn(3, 8)), Modality(pooled=torch.randn(5, 8)))
    assert scores.shape == (3, 5)
