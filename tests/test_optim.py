"""Parameter groups: a learning rate per group through the schedule, layer decay, no decay on norms/biases/temperatures."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmreg.api import collate_for, prepare
from mmreg.config import validate
from mmreg.errors import ConfigError
from mmreg.optim import layer_ids
from mmreg.train import Trainer, lr_factor
from mmreg.results import Metric

LRS = {"vision": 1e-4, "text": 2e-4, "head": 3e-3}  # fusion unset: takes train.lr


def experiment(tmp_path: Path, **optim: object) -> dict:
    return {
        "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32, "layers": 2},
        "fusion": {"name": "concat"},
        "loss": {"ce": {}},
        "task": "classification",
        "dataset": {"name": "shapes", "train_size": 32, "val_size": 16, "image_size": 32},
        "model": {"dim": 32},
        "train": {"batch_size": 8, "eval_batch_size": 16, "lr": 1e-3, "max_steps": 5, "warmup_ratio": 0.4, "weight_decay": 0.1},
        "optim": optim,
        "runs_dir": str(tmp_path),
    }


def trainer_for(tmp_path: Path, loss: dict | None = None, **optim: object) -> tuple[Trainer, object]:
    raw = experiment(tmp_path, **optim)
    exp = validate({**raw, "loss": loss or raw["loss"]})
    p = prepare(exp)
    trainer = Trainer(
        p.model, p.train_split, collate_for(p), [], exp.train, seed=0, run_dir=tmp_path, metric=Metric("accuracy"),
        optim=exp.optim, callbacks=[p.strategy],
    )  # fmt: skip
    trainer.evaluate = lambda: {"accuracy": 0.0}  # type: ignore[method-assign]
    return trainer, p


def test_each_group_gets_its_learning_rate_through_the_schedule(tmp_path: Path) -> None:
    trainer, _ = trainer_for(tmp_path, lr=LRS)
    seen: list[dict[str, float]] = []
    inner = trainer.optimizer.optimizer
    inner.register_step_pre_hook(lambda opt, args, kwargs: seen.append({g["name"]: g["lr"] for g in opt.param_groups}))
    trainer.fit()
    assert len(seen) == 5
    for step, lrs in enumerate(seen):
        factor = lr_factor(step, 5, 2, "cosine")
        for name, lr in lrs.items():
            asked = LRS.get(name.split("/")[0], 1e-3)
            assert lr == pytest.approx(asked * factor), (step, name)
    assert {name.split("/")[0] for name in seen[0]} == {"vision", "text", "fusion", "head"}


def test_no_weight_decay_on_norms_biases_embeddings_and_temperatures(tmp_path: Path) -> None:
    trainer, p = trainer_for(tmp_path, loss={"ce": {}, "infonce": {"learnable": True}})
    names = {id(param): name for name, param in p.model.named_parameters()}
    decay_of = {names[id(q)]: g["weight_decay"] for g in trainer.optimizer.param_groups for q in g["params"]}
    assert decay_of["encoder.model.vision_model.encoder.layers.0.self_attn.q_proj.weight"] == 0.1
    assert decay_of["encoder.model.text_model.encoder.layers.1.mlp.fc1.weight"] == 0.1
    for name in (
        "encoder.model.vision_model.encoder.layers.0.self_attn.q_proj.bias",
        "encoder.model.vision_model.encoder.layers.0.layer_norm1.weight",
        "encoder.model.text_model.embeddings.token_embedding.weight",
        "encoder.model.vision_model.embeddings.position_embedding.weight",
    ):
        assert decay_of[name] == 0.0, name
    temperatures = [n for n in decay_of if n.endswith(("log_scale", "logit_scale"))]
    assert temperatures and all(decay_of[n] == 0.0 for n in temperatures)
    assert len(decay_of) == sum(1 for q in p.model.parameters() if q.requires_grad), "every trainable weight is in one group"


def test_layer_decay_scales_each_tower_layer(tmp_path: Path) -> None:
    trainer, _ = trainer_for(tmp_path, layer_decay=0.5, lr={"vision": 1e-4})
    lrs = {g["name"]: g["initial_lr"] for g in trainer.optimizer.param_groups}
    # two layers: embeddings 0, layers 1-2, post norm 3 -> lr * 0.5^(3 - k)
    assert lrs["vision/no_decay/layer0"] == pytest.approx(1e-4 * 0.5**3)
    assert lrs["vision/decay/layer1"] == pytest.approx(1e-4 * 0.5**2)
    assert lrs["vision/decay/layer2"] == pytest.approx(1e-4 * 0.5)
    assert lrs["vision/no_decay/layer3"] == pytest.approx(1e-4)
    assert lrs["fusion/decay"] == pytest.approx(1e-3), "layer decay acts inside towers only"


def test_layer_ids_follow_registration_order() -> None:
    names = ["cls_token", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.1.mlp.fc1.weight", "norm.weight"]
    assert layer_ids([(n, None) for n in names]) == ([0, 0, 1, 2, 3], 3)  # type: ignore[misc]


def test_a_learning_rate_for_a_group_without_weights_is_refused(tmp_path: Path) -> None:
    exp = experiment(tmp_path, lr={"vision": 1e-4})
    exp["peft"] = {"name": "freeze", "towers": ["vision"]}
    with pytest.raises(ConfigError, match=r"^optim.lr.vision is set but no trainable weight is in the vision group \(groups with weights: fusion, head, text\)"):
        trainer_for_exp(tmp_path, exp)


def trainer_for_exp(tmp_path: Path, raw: dict) -> None:
    exp = validate(raw)
    p = prepare(exp)
    Trainer(p.model, p.train_split, collate_for(p), [], exp.train, seed=0, run_dir=tmp_path, metric=Metric("accuracy"), optim=exp.optim)


def test_an_unknown_group_is_an_unknown_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting 'optim.lr.visoin'; did you mean 'vision'"):
        validate(experiment(tmp_path, lr={"visoin": 1e-4}))



def test_sgd_with_momentum_keeps_the_groups_and_takes_sgds_step(tmp_path: Path) -> None:
    """optim.name = "sgd": torch's SGD over the same parameter groups (rates, decay), and its first step
    is w - lr * (g + weight_decay * w) (the momentum buffer starts at the gradient)."""
    import torch

    trainer, p = trainer_for(tmp_path, name="sgd", momentum=0.8, lr=LRS)
    inner = trainer.optimizer.optimizer
    assert isinstance(inner, torch.optim.SGD) and all(g["momentum"] == 0.8 for g in inner.param_groups)
    adamw, _ = trainer_for(tmp_path / "adamw", lr=LRS)
    assert [(g["name"], g["weight_decay"], len(g["params"])) for g in inner.param_groups] == [
        (g["name"], g["weight_decay"], len(g["params"])) for g in adamw.optimizer.optimizer.param_groups
    ]
    seen = []
    inner.register_step_pre_hook(lambda opt, args, kwargs: seen.append([(g["lr"], g["weight_decay"], [(q, q.detach().clone(), q.grad.clone()) for q in g["params"] if q.grad is not None]) for g in opt.param_groups]))
    trainer.cfg = trainer.cfg.model_copy(update={"max_steps": 1})
    trainer.total = 1
    trainer.fit()
    for lr, decay, params in seen[0]:
        for q, before, grad in params:
            torch.testing.assert_close(q.detach(), before - lr * (grad + decay * before), rtol=1e-5, atol=1e-7)


def test_runs_recorded_before_the_optimizer_could_be_chosen_trained_with_adamw() -> None:
    from mmreg.recorded import core_before

    assert core_before()["optim.name"] == "adamw" and core_before()["optim.momentum"] == 0.9
