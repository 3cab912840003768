"""Faults through the real CLI at the default thread count: the same command gives the same bits,
and a run SIGKILLed at 10 random moments (some inside a checkpoint write), resumed after each kill,
ends bit-identical to a run never interrupted."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from bad_inputs import TINY, mmreg

from mmreg.checkpoint import read_state

# Long enough that the thread-order-dependent kernels of the default model show (see mmreg.determinism).
SAME = ["--max-steps", "12", "--seed", "7", "--device", "cpu", "--set", "train.log_every=1", "--set", "dataset.train_size=384",
        "--set", "dataset.val_size=64"]  # fmt: skip
KILLED = [*TINY, "--max-steps", "30", "--set", "dataset.train_size=64", "--set", "train.checkpoint_every=1",
          "--set", "train.eval_every=10", "--set", "train.log_every=1"]  # fmt: skip


def test_same_command_twice_gives_identical_metrics_and_weights(tmp_path):
    assert os.environ.get("OMP_NUM_THREADS") in (None, "", "0") or int(os.environ["OMP_NUM_THREADS"]) > 1
    for name in ("a", "b"):
        result = mmreg("run", *SAME, "--name", name, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    a, b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    assert (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


def start(*args: str, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    return subprocess.Popen([sys.executable, "-m", "mmreg", *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def writing(checkpoints: Path) -> bool:
    """Whether a checkpoint is being written: its hidden directory or link exists."""
    return checkpoints.is_dir() and any(p.name.startswith((".last.", ".best.")) for p in checkpoints.iterdir())


def kill_at_a_random_moment(proc: subprocess.Popen, checkpoints: Path, rng: random.Random, mid_write: bool) -> bool | None:
    """Once a checkpoint exists, SIGKILL after a random delay (or as soon as a checkpoint write is
    under way); return whether a write was under way, or None when the run ended first."""
    while not (checkpoints / "last").exists():
        if proc.poll() is not None:
            return None
        time.sleep(0.002)
    deadline = time.monotonic() + rng.uniform(0.0, 1.5)
    while time.monotonic() < deadline or (mid_write and time.monotonic() < deadline + 5):
        if proc.poll() is not None:
            return None
        if mid_write and writing(checkpoints):
            break
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return writing(checkpoints)


def test_ten_kills_and_resumes_end_bit_identical_to_an_uninterrupted_run(tmp_path):
    whole = mmreg("run", *KILLED, "--name", "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr

    rng = random.Random(0)
    run_dir = tmp_path / "runs" / "killed"
    checkpoints = run_dir / "checkpoints"
    proc = start("run", *KILLED, "--name", "killed", cwd=tmp_path)
    kills, inside_a_write = 0, 0
    while kills < 10:
        landed = kill_at_a_random_moment(proc, checkpoints, rng, mid_write=kills % 2 == 0)
        if landed is None:  # finished before the kill: the budget of moments is spent
            assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
            break
        kills += 1
        inside_a_write += landed
        state = read_state(checkpoints / "last")  # always a whole checkpoint, old or new
        assert all((checkpoints / "last" / f).is_file() for f in ("model.safetensors", "optimizer.safetensors", "rng.safetensors"))
        assert state["loop"]["step"] <= 30
        proc = start("run", "--resume", str(run_dir), cwd=tmp_path)
    else:
        assert proc.wait(timeout=300) == 0, proc.stderr.read() if proc.stderr else ""
    assert kills == 10, f"only {kills} kills landed before the run finished"
    assert inside_a_write >= 1, "no kill landed inside a checkpoint write"
    assert not any(p.name.startswith((".last.", ".best.")) for p in checkpoints.iterdir()), "leftovers were not cleaned"
    assert (run_dir / "model.safetensors").read_bytes() == (tmp_path / "runs" / "whole" / "model.safetensors").read_bytes()
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    whole_steps = [json.loads(line) for line in (tmp_path / "runs" / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert steps == whole_steps
