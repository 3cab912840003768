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
