"""`mmreg plugins new`: for every kind, a package that installs, lists with its origin, runs with the
others in one experiment and one search, and whose own tests pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mmreg.errors import ConfigError, UnknownComponent
from mmreg.plugins import PluginInfo, load_plugins
from mmreg.registry import KINDS
from mmreg.scaffold import EXAMPLES, new_plugin
from test_cli import cli, one_error_line

NAMES = {kind.key: f"kit-{kind.label.split()[0]}" for kind in KINDS}  # kit-encoder, kit-fusion, ..., kit-peft, kit-balancer


def install(package: Path, site: Path) -> Path:
    """What `pip install -e` leaves behind, by hand: a dist-info with the package's own entry points
    (read from its pyproject.toml) in ``site``; returns the directory to put on the path."""
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    points = "".join(f"{name} = {target}\n" for name, target in project["entry-points"]["mmreg"].items())
    (info / "entry_points.txt").write_text(f"[mmreg]\n{points}")
    return package / "src"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Every kind written into one directory (the first by the real command) and installed;
    the environment that puts them on the path."""
    root = tmp_path_factory.mktemp("generated")
    result = cli("plugins", "new", "kit-fusion", "--kind", "fusion", "--dir", str(root), cwd=root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {root / 'kit-fusion'}: README.md, pyproject.toml, src/kit_fusion/__init__.py")
    for kind in KINDS:
        if kind.key != "fusions":
            new_plugin(NAMES[kind.key], kind.label.split()[0], root)
    site = root / "site"
    paths = [str(site)] + [str(install(root / name, site)) for name in NAMES.values()]
    return root, {"PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}


def test_every_kind_lists_with_its_package_as_origin(generated, monkeypatch):
    root, env = generated
    for path in env["PYTHONPATH"].split(os.pathsep)[:-1]:
        monkeypatch.syspath_prepend(path)
    host = load_plugins()
    for key, name in NAMES.items():
        entry = host.registry(key).get(name)
        assert entry.plugin == name and entry.help == EXAMPLES[key].help
        assert {p.name: p for p in host.plugins}[name] == PluginInfo(name, name.replace("-", "_"), f"entry point ({name})", "0.1.0")


def test_every_kind_runs_together_in_a_search_over_their_declared_ranges(generated):
    root, env = generated
    (root / "search.toml").write_text(
        'task = "kit-task"\nencoder = { name = "kit-encoder" }\nfusion = { name = "kit-fusion" }\n'
        'peft = { name = "kit-peft" }\naugment = { kit-augmenter = {} }\nmodel = { dim = 16 }\n'
        'dataset = { name = "kit-dataset", train_size = 16, val_size = 8 }\n'
        'train = { max_steps = 2, batch_size = 8, device = "cpu" }\n[loss.kit-loss]\n[balance.kit-balancer]\n'
        '[search]\n"fusion.rank" = {}\n"loss.kit-loss.margin" = {}\n"augment.kit-augmenter.p" = {}\n'
        '"balance.kit-balancer.strength" = {}\n'
    )  # every range is the one the generated Params declares
    search = cli("search", "search.toml", "--trials", "2", "--metric", "mrr", "--runs-dir", "runs", "--json", cwd=root, env=env)
    assert search.returncode == 0, search.stderr
    study = json.loads(search.stdout)
    assert study["states"] == {"complete": 2}
    for row in study["rows"]:
        assert row["params"]["fusion.rank"] in (8, 16, 32) and 0.05 <= row["params"]["loss.kit-loss.margin"] <= 0.5
        assert 0 <= row["params"]["balance.kit-balancer.strength"] <= 1
        summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())  # each trial is a whole run
        assert summary["task"] == "kit-task" and summary["steps"] == 2 and summary["best"]["metric"] == "mrr"
        assert set(summary["metrics"]) == {"mrr", "mrr_image_to_text", "mrr_text_to_image"}
        assert 1 / 8 <= summary["metrics"]["mrr"] <= 1  # a rank among 8 captions is at most 8
        for tower in summary["towers"].values():  # BitFit: only biases train inside the towers
            assert 0 < tower["trainable_parameters"] < tower["parameters"] / 10
        logged = [json.loads(line) for line in (Path(row["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        last = next(r for r in logged if r.get("split") == "train" and r["step"] == 2)  # the balancer's numbers, with the step
        assert sorted([last["balance/kit-balancer/coeff_image"], last["balance/kit-balancer/coeff_text"]])[1] == 1.0


TINY_RUN = (
    "--fusion", "none", "--max-steps", "1", "--batch-size", "4", "--device", "cpu", "--runs-dir", "runs", "--json",
    "--set", "encoder.hidden_size=16", "--set", "encoder.projection_dim=16", "--set", "model.dim=16",
    "--set", "dataset.train_size=8", "--set", "dataset.val_size=8",
)  # fmt: skip


def test_the_generated_task_takes_its_parameter_from_set_and_from_a_task_table(generated):
    root, env = generated
    by_flag = cli("run", "--task", "kit-task", "--set", "task.cutoff=3", *TINY_RUN, cwd=root, env=env)
    assert by_flag.returncode == 0, by_flag.stderr
    summary = json.loads(by_flag.stdout)
    assert summary["best"]["metric"] == "mrr" and summary["best"]["higher_is_better"]  # the template's headline
    assert summary["kit-task"] == {"cutoff": 3, "pairs": 64}  # its describe(): 8 images against 8 captions
    saved = tomllib.loads((root / summary["run_dir"] / "config.toml").read_text())
    assert saved["task"] == {"name": "kit-task", "cutoff": 3}  # rerunnable as it is

    (root / "task-table.toml").write_text('[task]\nname = "kit-task"\ncutoff = 2\n')
    by_table = cli("run", "task-table.toml", *TINY_RUN, cwd=root, env=env)
    assert by_table.returncode == 0, by_table.stderr
    assert json.loads(by_table.stdout)["kit-task"] == {"cutoff": 2, "pairs": 64}

    runs = sorted((root / "runs").iterdir())
    line = one_error_line(cli("run", "--task", "kit-task", "--set", "task.cutoff=0", *TINY_RUN, cwd=root, env=env))
    assert "task 'kit-task' parameter 'cutoff'" in line and "(got 0)" in line
    assert sorted((root / "runs").iterdir()) == runs  # refused before any run directory was made


def test_the_generated_tests_pass(generated):
    root, env = generated
    full_env = {**os.environ, **env, "COLUMNS": "200"}
    tests = [str(root / name / "tests") for name in NAMES.values()]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(root), *tests],
        cwd=root, env=full_env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    assert "27 passed" in result.stdout


def test_refuses_bad_names_unknown_kinds_and_existing_targets(tmp_path):
    for bad in ("My_Fusion", "9lives", "two--hyphens", "mmreg", ""):
        with pytest.raises(ConfigError, match="is not usable"):
            new_plugin(bad, "fusion", tmp_path)
    with pytest.raises(UnknownComponent, match="did you mean 'fusions'"):
        new_plugin("ok-name", "fuson", tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "pyproject.toml").write_text("keep me")
    with pytest.raises(ConfigError, match="already exists"):
        new_plugin("mine", "loss", tmp_path)
    assert (tmp_path / "mine" / "pyproject.toml").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging directory left behind
