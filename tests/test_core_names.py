"""The core names no built-in task, loss or encoder: each is a plugin like a third party's, and the
ways out an error offers come from the registry. The one exception is the default experiment
(``mmreg.config.DEFAULTS``), which must name something; the default task is the one a plugin
declares for what the losses read."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("task", "loss", "encoder")
ALLOWED = re.compile(r"^DEFAULTS = ")  # the default experiment


def built_in_names() -> set[str]:
    """Every built-in task, loss and encoder, from the entry points the package declares (``KIND-NAME``)."""
    entry_points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["mmreg"]
    return {key.split("-", 1)[1] for key in entry_points if key.split("-", 1)[0] in KINDS}


def test_the_core_names_no_built_in_task_loss_or_encoder():
    names = "|".join(sorted(map(re.escape, built_in_names()), key=len, reverse=True))
    # a name as code or a hint spells it: quoted, or after its flag or its kind
    pattern = re.compile(rf"""["']({names})["']|--(?:{"|".join(KINDS)}) ({names})\b|\b(?:{"|".join(KINDS)}) ({names})\b""")
    found = []
    for path in sorted((ROOT / "mmreg").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and not ALLOWED.match(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_scan_knows_every_kind():
    names = built_in_names()
    assert {"retrieval", "infonce", "clip"} <= names and "gated" not in names  # fusions are not scanned
