"""The [search] space without training: conditional parameters, declared ranges, what `mmreg show` prints."""

from __future__ import annotations

import optuna
import pytest

from mmreg.errors import ConfigError
from mmreg.plugins import load_plugins
from mmreg.space import Space


@pytest.fixture(scope="module")
def host():
    return load_plugins()


def draws(space: Space, n: int = 40) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.draw(trial))
        study.tell(trial, 0.0)
    return out


def test_a_parameter_is_drawn_only_under_the_choice_that_has_it(host):
    table = {
        "peft": ["lora", "full"],
        "peft.vision.r": {"choices": [4, 8]},
        "loss": [{"infonce": {}}, {"clip": {"weight": 0.7}, "ce": {"weight": 0.3}}],
        "loss.ce.weight": {"low": 0.1, "high": 0.5, "step": 0.1},
    }
    raws = draws(Space(table, {"task": "classification", "dataset": {"caption_kind": False}}, host))
    assert {r["peft"]["name"] for r in raws} == {"lora", "full"}
    for raw in raws:
        assert ("vision" in raw["peft"]) == (raw["peft"]["name"] == "lora")
        if "ce" in raw["loss"]:
            assert raw["loss"]["ce"]["weight"] in (0.1, 0.2, 0.3, 0.4, 0.5) and raw["loss"]["clip"]["weight"] == 0.7
        else:
            assert raw["loss"] == {"infonce": {}}


def test_a_task_parameter_is_searched_like_any_other_and_only_under_its_task(host):
    table = {"task": ["retrieval", "classification"], "task.shortlist": {"choices": [4, 8]}}
    raws = draws(Space(table, {"loss": {"infonce": {}, "ce": {}}}, host))
    assert {r["task"]["name"] for r in raws} == {"retrieval", "classification"}
    for raw in raws:  # only retrieval has a shortlist
        assert ("shortlist" in raw["task"]) == (raw["task"]["name"] == "retrieval")
        assert raw["task"].get("shortlist", 4) in (4, 8)
    with pytest.raises(ConfigError, match="shortlist"):
        Space({"task.shortlist": {"choices": [0, 4]}}, {"task": "retrieval"}, host)  # 0 breaks the schema's ge=1


def test_a_named_parameter_takes_the_range_its_plugin_declares(host):
    space = Space({"fusion": ["gated", "cross-attention"], "fusion.layers": {}, "loss.infonce.temperature": {}}, {}, host)
    dims = {d.key: d for d in space.dims}
    assert (dims["fusion.layers"].low, dims["fusion.layers"].high, dims["fusion.layers"].is_int) == (1, 3, True)
    assert (dims["loss.infonce.temperature"].low, dims["loss.infonce.temperature"].log) == (0.01, True)
    assert space.dims[0].key == "fusion"  # choices of plugin are drawn before the parameters that depend on them


def test_a_grid_lists_every_choice_and_step(host):
    space = Space({"fusion": ["none", "gated"], "train.lr": {"low": 0.001, "high": 0.003, "step": 0.001}}, {}, host)
    assert space.grid() == {"fusion": ["none", "gated"], "train.lr": [0.001, 0.002, 0.003]}


def test_a_choice_outside_the_parameters_schema_is_refused(host):
    with pytest.raises(ConfigError, match=r"search 'fusion.dropout': 1.0 is not allowed: .*less than 1"):
        Space({"fusion.dropout": {"choices": [0.1, 1.0]}}, {}, host)
