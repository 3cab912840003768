"""The conformance kit's balancer check passes OGM-GE and names the contract each broken balancer breaks;
a run names the balancer and the contract too, on the error line."""

from __future__ import annotations

import pytest
import torch

from mmreg.components import Balancer, GradientStep
from mmreg.errors import ConfigError
from mmreg.plugins import load_plugins
from mmreg.testing import ContractViolation, check_balancer
from test_cli import cli

HOST = load_plugins()
# A tiny classifier over two towers whose fusion gives each modality's own logits (concat): what OGM-GE reads.
TINY = {
    "encoder": {"name": "clip", "hidden_size": 16, "projection_dim": 16, "layers": 1},
    "fusion": {"name": "concat", "dropout": 0.0},
    "loss": {"ce": {}},
    "task": "classification",
    "dataset": {"name": "shapes", "train_size": 8, "val_size": 4, "image_size": 32},
    "model": {"dim": 16},
    "train": {"batch_size": 8, "device": "cpu"},
}


def caught(contract: str, balancer: Balancer) -> str:
    with pytest.raises(ContractViolation, match=f"contract '{contract}'") as info:
        check_balancer(balancer, TINY, HOST)
    assert isinstance(info.value, AssertionError)
    return str(info.value)


def weights(step: GradientStep) -> list[torch.nn.Parameter]:
    return [p for _, p in step.modalities["image"] if p.grad is not None]


class Halve(Balancer):
    """Halves the image tower's gradients: a conforming balancer that reads no unimodal logits."""

    def __call__(self, step: GradientStep) -> dict[str, float]:
        for p in weights(step):
            p.grad.mul_(0.5)
        return {"scale": 0.5}


class Flattened(Balancer):  # gives a gradient another shape, [1, numel], through .data (torch lets that pass)
    def __call__(self, step: GradientStep) -> dict[str, float]:
        first = weights(step)[0]
        first.grad.data = first.grad.reshape(1, -1)
        return {}


class Reassigned(Balancer):  # sets a gradient of another shape (torch refuses it as it is set)
    def __call__(self, step: GradientStep) -> dict[str, float]:
        first = weights(step)[0]
        first.grad = first.grad.reshape(1, -1)
        return {}


class Doubled(Balancer):  # gives a gradient another dtype through .data
    def __call__(self, step: GradientStep) -> dict[str, float]:
        first = weights(step)[0]
        first.grad.data = first.grad.double()
        return {}


class GlobalNoise(Balancer):  # noise from torch's global generator, not step.generator
    def __call__(self, step: GradientStep) -> dict[str, float]:
        for p in weights(step):
            p.grad.add_(torch.randn_like(p.grad))
        return {}


class NaNGradient(Balancer):
    def __call__(self, step: GradientStep) -> dict[str, float]:
        weights(step)[0].grad.fill_(float("nan"))
        return {}


class MovesWeights(Balancer):  # applies its own update
    def __call__(self, step: GradientStep) -> dict[str, float]:
        with torch.no_grad():
            for p in weights(step):
                p.sub_(0.1 * p.grad)
        return {}


class NaNNumber(Balancer):
    def __call__(self, step: GradientStep) -> dict[str, torch.Tensor]:
        return {"ratio": torch.tensor(0.0) / 0}


class PerRow(Balancer):  # a vector where a number is logged
    def __call__(self, step: GradientStep) -> dict[str, torch.Tensor]:
        return {"confidence": step.outputs.logits.softmax(-1).max(-1).values}


class Undeclared(Balancer):  # reads the unimodal logits without needs_unimodal
    def __call__(self, step: GradientStep) -> dict[str, torch.Tensor]:
        return {"image_logit": step.outputs.unimodal["image"].mean()}


class DeclaredUnread(Halve):  # declares needs_unimodal, never reads the logits
    needs_unimodal = True


class Crashes(Balancer):
    def __call__(self, step: GradientStep) -> dict[str, float]:
        raise RuntimeError("index out of range")


def test_ogm_ge_meets_the_balancer_contract_with_noise_and_without():
    balancers = HOST.registry("balancers")
    check_balancer(balancers.build("ogm_ge", {}), TINY, HOST)  # noise on by default: drawn from step.generator
    check_balancer(balancers.build("ogm_ge", {"noise": False, "alpha": 2.0}), TINY, HOST)
    check_balancer(balancers.build("ogm_ge", {"modulation_starts": 1}), TINY, HOST, epoch=1)


def test_a_conforming_balancer_that_reads_no_unimodal_logits_passes():
    check_balancer(Halve(), TINY, HOST)


BROKEN = [
    (Flattened(), "leaves each gradient its weight's shape and dtype", "and is now (1, "),
    (Reassigned(), "leaves each gradient its weight's shape and dtype", "RuntimeError: attempting to assign a gradient of size"),
    (Doubled(), "leaves each gradient its weight's shape and dtype", "torch.float64"),
    (GlobalNoise(), "deterministic for a given step.generator", "draw noise from step.generator"),
    (NaNGradient(), "keeps every gradient finite", "non-finite values"),
    (MovesWeights(), "changes gradients, never the weights", "changed"),
    (NaNNumber(), "returns finite numbers", "'ratio' is nan"),
    (PerRow(), "returns a mapping of numbers to log", "'confidence' is Tensor of shape (8,)"),
    (Undeclared(), "declares needs_unimodal to read outputs.unimodal", "TypeError"),
    (DeclaredUnread(), "declares needs_unimodal only where it reads outputs.unimodal", "neither"),
    (Crashes(), "runs on a step of a real model", "RuntimeError: index out of range"),
]


@pytest.mark.parametrize("balancer, contract, seen", BROKEN, ids=[type(case[0]).__name__ for case in BROKEN])
def test_each_broken_balancer_is_named_with_its_contract(balancer, contract, seen):
    message = caught(contract, balancer)
    assert message.startswith(f"balancer {type(balancer).__name__} breaks") and seen in message, message


def test_a_wrong_shape_names_the_weight_and_both_shapes():
    message = caught("leaves each gradient its weight's shape and dtype", Flattened())
    assert "shape" in message and "the gradient of " in message and "torch.float32 and is now (" in message


BROKEN_PLUGIN = """from mmreg import hookimpl
from mmreg.components import Balancer


class Flattened(Balancer):
    def __call__(self, step):
        first = next(p for _, p in step.modalities["image"] if p.grad is not None)
        first.grad.data = first.grad.reshape(1, -1)
        return {}


@hookimpl
def mmreg_register_balancers(register):
    register("flattened", Flattened, help="gives a gradient another shape")
"""
CLASSIFY = (
    "--encoder", "clip", "--fusion", "concat", "--loss", "ce", "--task", "classification", "--max-steps", "2",
    "--batch-size", "8", "--device", "cpu", "--set", "encoder.hidden_size=16", "--set", "encoder.projection_dim=16",
    "--set", "encoder.layers=1", "--set", "model.dim=16", "--set", "dataset.train_size=16", "--set", "dataset.val_size=8",
)  # fmt: skip


@pytest.mark.parametrize(
    "breaks,seen",
    [("first.grad.data = first.grad.reshape(1, -1)", "was (16,) torch.float32 and is now (1, 16) torch.float32"),
     ("first.grad = first.grad.double()", "attempting to assign a gradient with dtype 'double'")],
    ids=["reshaped-in-place", "assigned-another-dtype"],
)
def test_a_run_names_the_broken_balancer_and_its_contract(tmp_path, breaks, seen):
    """Changed behind torch's back (.data) the run finds it after the call; assigned, torch refuses it in the call."""
    (tmp_path / "broken_balancer.py").write_text(BROKEN_PLUGIN.replace("first.grad.data = first.grad.reshape(1, -1)", breaks))
    listed = cli("--plugin", "broken_balancer.py", "list", "balancers", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    result = cli("--plugin", "broken_balancer.py", "run", *CLASSIFY, "--balance", "flattened", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]  # after the progress lines, the one error line
    assert line.startswith("error: balancer 'flattened' breaks the contract 'leaves each gradient its weight's shape and dtype'"), line
    assert seen in line, line



def test_a_balancer_reading_unimodal_logits_needs_an_experiment_that_gives_them():
    gated = {**TINY, "fusion": {"name": "gated", "heads": 2}}  # a gate mixes the modalities: no unimodal logits
    with pytest.raises(ConfigError, match="declares needs_unimodal"):
        check_balancer(HOST.registry("balancers").build("ogm_ge", {}), gated, HOST)
    check_balancer(Halve(), gated, HOST)  # one that reads only gradients works with any fusion
