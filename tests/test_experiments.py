"""Every experiment file in experiments/ validates against the installed plugins."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmreg.api import check_components, resolve
from mmreg.config import load_experiment
from mmreg.plugins import load_plugins

FILES = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.toml"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_experiment_file_resolves(path):
    host = load_plugins()
    exp = resolve(load_experiment(path), host)
    check_components(exp, host)
    assert exp.encoder.params and exp.loss


PEFT_FILES = ["clip-lora", "dual-lora", "linear-probe", "progressive"]


@pytest.mark.parametrize("stem", PEFT_FILES)
def test_peft_experiment_says_what_it_shows_and_how_to_run_it_offline(stem):
    path = Path(__file__).resolve().parents[1] / "experiments" / f"{stem}.toml"
    text = path.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert text.startswith("# ") and len(header) >= 3, "a comment saying what the experiment shows"
    assert f"#   mmreg run experiments/{stem}.toml\n" in text, "the command that runs it offline, as it is"
    assert "Shows" in text
    exp = resolve(load_experiment(path), load_plugins())
    assert exp.peft.name != "full"
