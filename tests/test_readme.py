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


def task_table() -> str:
    """The README's task table, generated from the registered task plugins."""
    rows = ["| task | text fed | dataset fields | gives the losses | headline | parameters | what it is |", "|---|---|---|---|---|---|---|"]
    for entry in load_plugins().registry("tasks"):
        task = getattr(entry.factory, "__self__", entry.factory)
        gives = ", ".join(f"`{f}`" for f in sorted(task.provides)) or "none: the fusion's `score`"
        fields = ", ".join(sorted(task.needs_fields))
        headline = f"`{task.headline}`" if task.headline else "its first metric"
        params = ", ".join(f"`{p}`" for p in entry.params.model_fields) or "none"
        rows.append(f"| `{entry.name}` | {task.text} | {fields} | {gives} | {headline} | {params} | {entry.help} |")
    return "\n".join(rows) + "\n"


def test_readme_task_table_is_the_registry():
    table = task_table()
    assert table in README.read_text(), f"README's task table is out of date; replace it with:\n{table}"


def test_readme_task_plugin_example_trains_and_reports_accuracy(tmp_path):
    import mmreg

    blocks = re.findall(r"```python\n(# my_tasks\.py\n.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1
    (tmp_path / "my_tasks.py").write_text(blocks[0])
    host = load_plugins([str(tmp_path / "my_tasks.py")])
    assert host.registry("tasks").get("shape-size").plugin == "my_tasks"
    exp = {
        "task": "shape-size", "loss": {"ce": {}}, "fusion": {"name": "concat"}, "runs_dir": str(tmp_path / "runs"),
        "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32}, "model": {"dim": 32},
        "dataset": {"name": "shapes", "train_size": 32, "val_size": 16}, "train": {"max_steps": 2, "batch_size": 8},
    }  # fmt: skip
    summary = mmreg.run(exp, host=host, progress=False)
    assert summary["task"] == "shape-size" and summary["classes"] == 2 and set(summary["metrics"]) == {"accuracy", "accuracy/image_only", "accuracy/text_only"}
