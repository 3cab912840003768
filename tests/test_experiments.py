"""Every experiment file in experiments/ validates against the installed plugins, its search space too."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmreg.api import check_components, resolve
from mmreg.config import apply_overrides, load_experiment, read_file
from mmreg.plugins import load_plugins
from mmreg.space import Space

FILES = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.toml"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_experiment_file_resolves(path):
    host = load_plugins()
    exp = resolve(load_experiment(path), host)
    check_components(exp, host)
    assert exp.encoder.params and exp.loss
    raw = read_file(path)
    if "search" in raw:  # every value the space can draw is checked against the parameters' own schemas
        space = Space(raw.pop("search"), apply_overrides(raw, []), host)
        assert space.dims
