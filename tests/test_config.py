"""Experiment config: file, then flags, then --set; validation messages; round trip to TOML."""

from __future__ import annotations

import pytest

from mmreg.config import Experiment, load_experiment, parse_value, read_file, to_file_layout, validate, write_file
from mmreg.errors import ConfigError

FILE = """
name = "exp"
seed = 3

[encoder]
name = "clip"
hidden_size = 32

[fusion]
name = "gated"
heads = 2

[loss.infonce]
weight = 1.0
temperature = 0.1

[train]
lr = 0.01
"""


@pytest.fixture
def toml_file(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text(FILE)
    return path


def test_defaults_are_the_main_job():
    exp = Experiment()
    assert (exp.encoder.name, exp.fusion.name, list(exp.loss), exp.dataset.name) == ("clip", "gated", ["infonce"], "shapes")


def test_file_then_flags_then_overrides(toml_file):
    exp = load_experiment(toml_file, {"lr": 0.5, "epochs": 2}, ["train.lr=0.25", "fusion.layers=3", "encoder.pretrained=/some/dir"])
    assert exp.seed == 3 and exp.train.epochs == 2
    assert exp.train.lr == 0.25  # --set beats the flag, which beat the file
    assert exp.fusion.params == {"heads": 2, "layers": 3}
    assert exp.encoder.params == {"hidden_size": 32, "pretrained": "/some/dir"}
    assert exp.loss["infonce"].weight == 1.0 and exp.loss["infonce"].params == {"temperature": 0.1}


def test_choosing_another_component_by_flag_drops_the_files_params(toml_file):
    exp = load_experiment(toml_file, {"fusion": "none"})
    assert exp.fusion.name == "none" and exp.fusion.params == {}
    same = load_experiment(toml_file, {"fusion": "gated"})
    assert same.fusion.params == {"heads": 2}


def test_weighted_losses_from_flags():
    exp = load_experiment(None, {"loss": ["clip:0.7", "ce:0.3"]})
    assert {n: e.weight for n, e in exp.loss.items()} == {"clip": 0.7, "ce": 0.3}
    with pytest.raises(ConfigError, match="must be a number"):
        load_experiment(None, {"loss": ["clip:lots"]})


def test_yaml_reads_like_toml(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("fusion:\n  name: none\ntrain:\n  batch_size: 8\n")
    exp = load_experiment(path)
    assert exp.fusion.name == "none" and exp.train.batch_size == 8


def test_round_trip_through_toml(tmp_path, toml_file):
    exp = load_experiment(toml_file, overrides=["encoder.pretrained=x"])
    write_file(exp, tmp_path / "config.toml")
    assert load_experiment(tmp_path / "config.toml") == exp
    assert load_experiment(tmp_path) == exp  # a run directory reruns its config.toml
    assert "pretrained" not in to_file_layout(Experiment())["encoder"]  # None is left out: TOML has no null


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.lrr=1"], "unknown setting 'train.lrr'; did you mean 'lr'"),
        (["train.batch_size=abc"], "setting 'train.batch_size': input should be a valid integer"),
        (["train.batch_size=1"], "greater than or equal to 2"),
        (["nonsense"], "is not KEY=VALUE"),
        (["seed=1", "seed.x=1"], "'seed' is a value, not a table"),
        (["seed.x=1"], "setting 'seed': input should be a valid integer"),
        (["fusion=3"], "'fusion' must be a table"),
    ],
)
def test_bad_overrides_say_what_and_where(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment(None, {}, overrides)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[fusion\nname=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_file(bad)
    other = tmp_path / "exp.json"
    other.write_text("{}")
    with pytest.raises(ConfigError, match="unknown format '.json'"):
        read_file(other)


def test_a_table_without_a_name_sets_the_default_component(tmp_path):
    nameless = tmp_path / "nameless.toml"
    nameless.write_text("[fusion]\nheads = 2\n")
    assert load_experiment(nameless).fusion.model_dump() == {"name": "gated", "params": {"heads": 2}}
    exp = load_experiment(None, {}, ["encoder.pretrained=/models/clip", "dataset.train_size=8"])
    assert exp.encoder.name == "clip" and exp.encoder.params == {"pretrained": "/models/clip"}
    assert exp.dataset.name == "shapes" and exp.dataset.params == {"train_size": 8}


def test_parse_value_reads_toml_literals_else_strings():
    assert parse_value("3") == 3 and parse_value("1e-3") == 0.001 and parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value("/a/b") == "/a/b" and parse_value('"7"') == "7"


def test_validate_accepts_the_file_layout():
    exp = validate({"augment": {"none": {}}, "dataset": {"name": "shapes", "train_size": 10}})
    assert exp.dataset.params == {"train_size": 10} and exp.augment["none"].weight == 1.0
