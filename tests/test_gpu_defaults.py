"""GPU-native defaults, each branch tested on the CPU: what `--precision auto` resolves to (recorded
in config.toml, the summary and the resume trajectory), the fused AdamW choice, TF32 set and
restored, sharded launches (FSDP, DeepSpeed) refused, a run under torch.compile, and the row form
of the contrastive loss on one process (under two, tests/test_training.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import mmreg
from mmreg.api import prepare
from mmreg.checkpoint import read_state
from mmreg.config import validate
from mmreg.distributed import check_launch
from mmreg.errors import ConfigError
from mmreg.layers import symmetric_infonce
from mmreg.optim import adamw_kernel, build_optimizer
from mmreg.precision import auto_precision, resolve_precision, tf32_applies, tf32_matmuls

TINY = {
    "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32, "layers": 1},
    "fusion": {"name": "gated", "heads": 2},
    "dataset": {"name": "shapes", "train_size": 32, "val_size": 16, "image_size": 32},
    "model": {"dim": 32},
    "train": {"batch_size": 8, "eval_batch_size": 16, "lr": 3e-3, "max_steps": 2},
}


@pytest.mark.parametrize(
    ("device", "capability", "expected"),
    [
        ("cpu", None, "fp32"),
        ("mps", None, "fp32"),
        ("cuda", (6, 1), "fp16"),  # Pascal: no bf16 tensor cores
        ("cuda", (7, 5), "fp16"),  # Turing (T4)
        ("cuda", (8, 0), "bf16"),  # Ampere (A100)
        ("cuda", (8, 9), "bf16"),  # Ada (L4)
        ("cuda", (9, 0), "bf16"),  # Hopper (H100)
    ],
)
def test_auto_precision_by_device_and_capability(device, capability, expected):
    assert auto_precision(device, capability) == expected


def test_resolve_precision_keeps_a_concrete_one_and_checks_it():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ConfigError, match="fp16 cannot run on the CPU"):
        resolve_precision("fp16", torch.device("cpu"))


def test_auto_is_the_default_and_a_run_records_what_it_resolved_to(tmp_path):
    assert validate({}).train.precision == "auto"
    summary = mmreg.run({**TINY, "runs_dir": str(tmp_path)}, progress=False)
    run_dir = Path(summary["run_dir"])
    assert summary["precision"] == "fp32"
    assert tomllib.loads((run_dir / "config.toml").read_text())["train"]["precision"] == "fp32"
    # what a resume compares against: the concrete precision, so it resumes in the same one
    assert read_state(run_dir / "checkpoints" / "last")["trajectory"]["train.precision"] == "fp32"
    again = mmreg.run(resume=run_dir, progress=False)  # auto resolved again on resume: same precision, allowed
    assert again["precision"] == "fp32" and again["metrics"] == summary["metrics"]


def test_fused_adamw_only_where_every_weight_is_a_cuda_float():
    assert adamw_kernel("cuda", [torch.float32, torch.bfloat16]) == {"fused": True}
    assert adamw_kernel("cuda", [torch.float32, torch.int64]) == {}
    assert adamw_kernel("cuda", []) == {}
    assert adamw_kernel("cpu", [torch.float32]) == {}
    assert adamw_kernel("mixed", [torch.float32]) == {}


def test_a_cpu_run_keeps_torchs_own_adamw():
    exp = validate(TINY)
    p = prepare(exp)
    optimizer = build_optimizer(p.model, exp.train, exp.optim)
    assert not optimizer.defaults["fused"] and optimizer.defaults["foreach"] is None


def test_tf32_only_on_ampere_and_newer_when_asked():
    assert tf32_applies("cuda", (8, 0), True) and tf32_applies("cuda", (9, 0), True)
    assert not tf32_applies("cuda", (7, 5), True)
    assert not tf32_applies("cuda", (9, 0), False)
    assert not tf32_applies("cpu", None, True)


def test_tf32_settings_are_restored_after_the_block_even_on_error():
    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        with pytest.raises(RuntimeError), tf32_matmuls(True):
            assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32
            raise RuntimeError("the run failed")
        assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == ("highest", False)
        with tf32_matmuls(False):
            assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def test_the_row_form_of_infonce_on_one_process_is_the_whole_loss():
    """With every row present (offset 0, one process), the sharded form's column softmax over the rows
    gives the same loss and gradient as cross-entropy over the transposed matrix."""
    logits = torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64, requires_grad=True)
    whole = symmetric_infonce(logits)
    (whole_grad,) = torch.autograd.grad(whole, logits)
    rows = symmetric_infonce(logits, 0)
    (rows_grad,) = torch.autograd.grad(rows, logits)
    torch.testing.assert_close(rows, whole)
    torch.testing.assert_close(rows_grad, whole_grad)


@pytest.mark.parametrize(("variable", "name"), [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_sharded_launches_are_refused_and_plain_ones_are_not(variable, name):
    check_launch({variable: "false", "ACCELERATE_MIXED_PRECISION": "bf16"})
    with pytest.raises(ConfigError, match=f"configured for {name} .*launch data-parallel"):
        check_launch({variable: "true"})


def tensor_names(path: Path) -> set[str]:
    with safe_open(str(path), "pt") as f:
        return set(f.keys())


@pytest.mark.slow  # torch.compile's first compilation: minutes on a busy 2-core CPU
def test_a_compiled_run_trains_saves_plain_names_resumes_and_evaluates(tmp_path):
    """train.compile: deterministic (a second compiled run gives the same bytes), the same losses as eager
    to rounding, weights saved under the model's own names (no `_orig_mod.` prefix), loadable by an
    uncompiled model and resumable by a compiled run."""
    exp = {**TINY, "runs_dir": str(tmp_path), "train": {**TINY["train"], "compile": True}}
    compiled, repeated = mmreg.run(exp, progress=False), mmreg.run(exp, progress=False)
    eager = mmreg.run({**TINY, "runs_dir": str(tmp_path)}, progress=False)
    assert compiled["final_loss"] == pytest.approx(eager["final_loss"], rel=1e-4)
    run_dir = Path(compiled["run_dir"])
    for name in ("model.safetensors", "metrics.jsonl"):
        assert (run_dir / name).read_bytes() == (Path(repeated["run_dir"]) / name).read_bytes()
    names = set(prepare(validate(TINY)).model.state_dict())
    for path in (run_dir / "model.safetensors", run_dir / "checkpoints" / "last" / "model.safetensors"):
        assert tensor_names(path) == names
    again = mmreg.run(resume=run_dir, progress=False)  # loads checkpoints/last into a compiled model, evaluates
    assert again["metrics"] == pytest.approx(compiled["metrics"], abs=1e-6)
