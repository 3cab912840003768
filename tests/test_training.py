"""The training engine: resume after a kill, signals, non-finite losses, accumulation, data parallel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mmreg
from mmreg.api import collate_for, prepare
from mmreg.config import validate
from mmreg.errors import TrainingDiverged
from mmreg.results import Metric
from mmreg.train import Trainer, lr_factor

HERE = Path(__file__).resolve().parent

TINY = {
    "encoder": {"name": "clip", "hidden_size": 32, "projection_dim": 32, "layers": 1},
    "fusion": {"name": "gated", "heads": 2},
    "dataset": {"name": "shapes", "train_size": 64, "val_size": 16, "image_size": 32},
    "model": {"dim": 32},
    "train": {"batch_size": 8, "eval_batch_size": 16, "lr": 3e-3},
}
FLAGS = [
    "--set", "encoder.hidden_size=32", "--set", "encoder.projection_dim=32", "--set", "encoder.layers=1",
    "--set", "fusion.heads=2", "--set", "dataset.train_size=64", "--set", "dataset.val_size=16",
    "--set", "dataset.image_size=32", "--set", "model.dim=32", "--batch-size", "8", "--set", "train.eval_batch_size=16",
    "--lr", "3e-3",
]  # fmt: skip


def cli(*args: str, cwd: Path, **kwargs) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    return subprocess.Popen(
        [sys.executable, "-m", "mmreg", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def wait_for_checkpoint(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    state = run_dir / "checkpoints" / "last" / "state.json"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if state.is_file() and json.loads(state.read_text())["loop"]["step"] >= step:
            return
        assert proc.poll() is None, f"run ended before step {step}: {proc.communicate()[1][-2000:]}"
        time.sleep(0.01)
    raise AssertionError(f"no checkpoint at step {step} within {timeout}s")


def test_lr_schedule_warms_up_then_decays():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(1 / 11)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(10 / 11)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(55, 100, 10, "linear") == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(70, 100, 0, "constant") == 1.0


def kill_and_resume(tmp_path: Path, flags: list[str], steps: int, kill_at: int) -> tuple[dict, dict, Path]:
    """The same run twice, once uninterrupted ("whole") and once SIGKILLed after its checkpoint at
    ``kill_at`` and resumed ("killed"): (the whole run's summary, the resumed one's, its run directory).
    Asserts the kill came before the end and the resume succeeded."""
    common = [*flags, "--max-steps", str(steps), "--set", "train.checkpoint_every=2", "--json"]
    whole = cli("run", *common, "--name", "whole", cwd=tmp_path)
    out, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err
    reference = json.loads(out)

    killed = cli("run", *common, "--name", "killed", cwd=tmp_path)
    run_dir = tmp_path / "runs" / "killed"
    wait_for_checkpoint(run_dir, kill_at, killed)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists(), "the run finished before it could be killed"
    stopped_at = json.loads((run_dir / "checkpoints" / "last" / "state.json").read_text())["loop"]["step"]
    assert stopped_at < steps

    resumed = cli("run", "--resume", str(run_dir), "--json", cwd=tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    return reference, json.loads(out), run_dir


def assert_same_end(reference: dict, summary: dict, run_dir: Path, steps: int) -> None:
    """The resumed run ended where the whole one did: steps, metrics, loss and every weight bit for bit."""
    assert summary["steps"] == steps and summary["metrics"] == reference["metrics"]
    assert summary["final_loss"] == reference["final_loss"]
    a, b = load_file(run_dir / "model.safetensors"), load_file(run_dir.parent / "whole" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_kill_then_resume_ends_with_the_same_weights_and_metrics(tmp_path):
    reference, summary, run_dir = kill_and_resume(tmp_path, [*FLAGS, "--set", "train.eval_every=8"], 24, 6)
    assert_same_end(reference, summary, run_dir, 24)
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps), "metrics written after the checkpoint were not dropped on resume"


def test_sigterm_saves_a_checkpoint_and_exits_non_zero(tmp_path):
    proc = cli("run", *FLAGS, "--max-steps", "100000", "--set", "train.checkpoint_every=2", "--name", "t", cwd=tmp_path)
    run_dir = tmp_path / "runs" / "t"
    wait_for_checkpoint(run_dir, 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert f"resume with: mmreg run --resume {Path('runs') / 't'}" in err
    assert "Traceback" not in err
    state = json.loads((run_dir / "checkpoints" / "last" / "state.json").read_text())
    assert state["loop"]["step"] >= 2 and (run_dir / "checkpoints" / "last" / "optimizer.safetensors").is_file()


NAN_LOSS = '''
import math
import torch
from mmreg import hookimpl
from mmreg.components import Loss


class NanAfter(Loss):
    """Cross-entropy on the diagonal, then NaN from the 5th call on."""

    needs = frozenset({"scores"})

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, step):
        self.calls += 1
        loss = torch.nn.functional.cross_entropy(step.scores, torch.arange(len(step.scores)))
        return loss * math.nan if self.calls > 4 else loss


@hookimpl
def mmreg_register_losses(register):
    register("nan-after", NanAfter)
'''


def test_non_finite_losses_are_skipped_then_stop_keeping_the_last_good_checkpoint(tmp_path):
    (tmp_path / "nanloss.py").write_text(NAN_LOSS)
    proc = cli(
        "--plugin", "nanloss.py", "run", *FLAGS, "--loss", "nan-after", "--max-steps", "50",
        "--set", "train.checkpoint_every=2", "--name", "n", cwd=tmp_path,
    )  # fmt: skip
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    line = err.strip().splitlines()[-1]
    assert "loss was not finite for 3 steps in a row (last at step 7)" in line and "lower train.lr" in line
    assert f"the last good checkpoint is {Path('runs') / 'n' / 'checkpoints' / 'last'}" in line and "fp16" not in line
    state = json.loads((tmp_path / "runs" / "n" / "checkpoints" / "last" / "state.json").read_text())
    assert state["loop"]["step"] == 4  # the checkpoint before the bad steps was kept
    skipped = [json.loads(x) for x in (tmp_path / "runs" / "n" / "metrics.jsonl").read_text().splitlines() if "skipped" in x]
    assert [r["step"] for r in skipped] == [5, 6, 7]


def test_a_loss_never_finite_says_no_checkpoint_exists(tmp_path):
    (tmp_path / "nanloss.py").write_text(NAN_LOSS.replace("self.calls > 4", "True"))
    exp = {**TINY, "runs_dir": str(tmp_path / "runs"), "loss": {"nan-after": {}}, "train": {**TINY["train"], "max_steps": 5}}
    with pytest.raises(TrainingDiverged) as caught:
        mmreg.run(exp, host=mmreg.load_plugins([str(tmp_path / "nanloss.py")]), progress=False)
    assert str(caught.value) == (
        "loss was not finite for 3 steps in a row (last at step 3); no step had a finite loss and no checkpoint "
        "was written; check the loss settings and the data"
    )
    assert not list((tmp_path / "runs").glob("*/checkpoints/last"))


def first_step_gradients(tmp_path: Path, batch: int, accum: int) -> list[torch.Tensor]:
    """The gradients the optimizer steps with, first step, classification with cross-entropy."""
    exp = validate(
        {
            **TINY,
            "fusion": {"name": "concat", "dropout": 0.0},
            "loss": {"ce": {}},
            "task": "classification",
            "runs_dir": str(tmp_path),
            "train": {"batch_size": batch, "grad_accum": accum, "max_steps": 1},
        }
    )
    p = prepare(exp)
    run_dir = tmp_path / f"b{batch}x{accum}"
    run_dir.mkdir()
    trainer = Trainer(p.model, p.train_split, collate_for(p), [], exp.train, seed=0, run_dir=run_dir, metric=Metric("accuracy"))
    trainer.evaluate = lambda: {"accuracy": 0.0}  # type: ignore[method-assign]  # gradients are what is compared
    captured: list[torch.Tensor] = []
    inner = trainer.optimizer.optimizer  # accelerate's wrapper around AdamW
    inner.register_step_pre_hook(lambda opt, args, kwargs: captured.extend(q.grad.clone() for g in opt.param_groups for q in g["params"]))
    trainer.fit()
    return captured


def test_accumulating_4_batches_of_8_equals_one_batch_of_32(tmp_path):
    accumulated, whole = first_step_gradients(tmp_path, 8, 4), first_step_gradients(tmp_path, 32, 1)
    single = first_step_gradients(tmp_path, 8, 1)
    assert len(accumulated) == len(whole) > 0
    for a, w in zip(accumulated, whole, strict=True):
        torch.testing.assert_close(a, w, rtol=1e-4, atol=1e-7)
    assert any(not torch.allclose(s, w, rtol=1e-2) for s, w in zip(single, whole, strict=True))  # the probe can tell


def test_bf16_autocast_trains_on_cpu(tmp_path):
    summary = mmreg.run({**TINY, "runs_dir": str(tmp_path), "train": {**TINY["train"], "max_steps": 3, "precision": "bf16"}}, progress=False)
    assert summary["precision"] == "bf16" and summary["steps"] == 3 and summary["final_loss"] == summary["final_loss"]


def test_early_stopping_stops_after_patience(tmp_path):
    train = {**TINY["train"], "epochs": 50, "eval_every": 1, "early_stopping_patience": 2, "lr": 1e-12, "metric": "recall@1"}
    summary = mmreg.run({**TINY, "runs_dir": str(tmp_path), "train": train}, progress=False)
    assert summary["stopped_early"] and summary["steps"] <= summary["best"]["step"] + 2
    assert (Path(summary["run_dir"]) / "checkpoints" / "best" / "model.safetensors").is_file()
    assert (Path(summary["run_dir"]) / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Two local processes; on a hang the whole process group is killed, workers included."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"2-process run hung; stderr: {err[-2000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_two_process_data_parallel_run_finishes_on_the_whole_validation_set(tmp_path):
    result = torchrun("-m", "mmreg", "run", *FLAGS, "--max-steps", "3", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)  # only the main process prints
    assert summary["processes"] == 2 and summary["val_size"] == 16
    assert len(list((tmp_path / "runs").iterdir())) == 1  # only the main process writes


def two_processes_against_one(exp: dict, tmp_path: Path) -> list[dict]:
    """Run distributed_loss.py on 2 processes (gloo) and assert, sharded and whole, that the mean of their
    losses and their averaged gradients equal one process's on the same 16 pairs; return each rank's record."""
    result = torchrun(str(HERE / "distributed_loss.py"), json.dumps(exp), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    p = prepare(validate(exp))
    loss, _ = p.model.eval()(collate_for(p)(list(p.train_split[:16])))
    loss.backward()
    assert [r["sharded"]["scores"] for r in ranks] == [[8, 16], [8, 16]]
    for way in ("sharded", "whole"):
        assert sum(r[way]["loss"] for r in ranks) / 2 == pytest.approx(loss.item(), rel=1e-5)
        for r in ranks:
            for name, grad in r[way]["grads"].items():
                expected = p.model.get_parameter(name).grad.flatten()[:64]
                torch.testing.assert_close(torch.tensor(grad), expected, rtol=1e-4, atol=1e-6)
    return ranks


def test_data_parallel_contrastive_loss_equals_the_single_process_loss_on_the_whole_batch(tmp_path):
    """Sharded (each process scores its 8 x 16 rows) and whole (16 x 16 on each process), the mean of the
    processes' losses and the averaged gradients equal one process's on the 16 pairs, for infonce, siglip and clip."""
    exp = {**TINY, "loss": {"infonce": {"weight": 1.0}, "siglip": {"weight": 0.5}, "clip": {"weight": 0.25}}}
    ranks = two_processes_against_one(exp, tmp_path)
    assert [r["sharded"]["offset"] for r in ranks] == [0, 8]
    assert [r["whole"]["scores"] for r in ranks] == [[16, 16], [16, 16]]
    assert ranks[0]["sharded"]["loss"] != pytest.approx(ranks[1]["sharded"]["loss"])  # each its own share


def test_gradient_checkpointing_recomputes_without_changing_the_result(tmp_path):
    def final_loss(checkpointing: bool) -> float:
        train = {**TINY["train"], "max_steps": 3, "gradient_checkpointing": checkpointing}
        return mmreg.run({**TINY, "runs_dir": str(tmp_path), "train": train}, progress=False)["final_loss"]

    assert final_loss(True) == pytest.approx(final_loss(False), rel=1e-5)
    from mmreg.train import enable_gradient_checkpointing

    p = prepare(validate(TINY))
    enable_gradient_checkpointing(p.model)
    assert p.model.encoder.model.vision_model.encoder.gradient_checkpointing


def test_each_part_logs_the_norm_of_its_gradients_and_curves_show_them(tmp_path):
    """grad_norm/PART in the training records: the L2 norm of that part's gradients the optimizer steps
    with (no clipping here), for the towers, the fusion and the head; a panel of curves.png plots them."""
    from mmreg.optim import named_by_group
    from mmreg.plot import plot_curves

    exp = validate({**TINY, "fusion": {"name": "concat"}, "loss": {"ce": {}, "infonce": {}}, "task": "classification",
                    "runs_dir": str(tmp_path), "train": {**TINY["train"], "max_steps": 2, "log_every": 1, "max_grad_norm": None}})  # fmt: skip
    p = prepare(exp)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    trainer = Trainer(p.model, p.train_split, collate_for(p), [], exp.train, seed=0, run_dir=run_dir, metric=Metric("accuracy"))
    trainer.evaluate = lambda: {"accuracy": 0.0}  # type: ignore[method-assign]
    expected: list[dict[str, float]] = []
    parts = named_by_group(p.model)

    def by_hand(opt, args, kwargs):
        expected.append({f"grad_norm/{part}": torch.stack([q.grad.norm() for _, q in named]).norm().item() for part, named in parts.items() if named})

    trainer.optimizer.optimizer.register_step_pre_hook(by_hand)
    trainer.fit()
    logged = [{k: v for k, v in json.loads(line).items() if k.startswith("grad_norm/")}
              for line in (run_dir / "metrics.jsonl").read_text().splitlines() if json.loads(line)["split"] == "train"]  # fmt: skip
    assert len(logged) == 2 and set(logged[0]) == {"grad_norm/vision", "grad_norm/text", "grad_norm/fusion", "grad_norm/head"}
    for got, want in zip(logged, expected, strict=True):
        assert got == pytest.approx(want, rel=1e-5)
    from PIL import Image

    out = plot_curves(run_dir / "metrics.jsonl", tmp_path / "curves.png")
    assert Image.open(out).size[1] == 3 * 320  # training loss, gradient norms, validation
