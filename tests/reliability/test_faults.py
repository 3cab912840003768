"""Faults through the real CLI at the default thread count: the same command gives the same bits,
and a run SIGKILLed at 10 random moments (some inside a checkpoint write), resumed after each kill,
ends bit-identical to a run never interrupted."""

from __future__ import annotations

import os

from harness import kill_and_resume, mmreg

# Long enough that the thread-order-dependent kernels of the default model show (see mmreg.determinism).
SAME = ["--max-steps", "12", "--seed", "7", "--device", "cpu", "--set", "train.log_every=1", "--set", "dataset.train_size=384",
        "--set", "dataset.val_size=64"]  # fmt: skip


def test_same_command_twice_gives_identical_metrics_and_weights(tmp_path):
    assert os.environ.get("OMP_NUM_THREADS") in (None, "", "0") or int(os.environ["OMP_NUM_THREADS"]) > 1
    for name in ("a", "b"):
        result = mmreg("run", *SAME, "--name", name, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    a, b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    assert (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


def test_ten_kills_and_resumes_end_bit_identical_to_an_uninterrupted_run(tmp_path):
    result = kill_and_resume(tmp_path, kills=10)
    assert result["kills"] == 10, f"only {result['kills']} kills landed before the run finished"
    assert result["whole_checkpoints_after_kills"] == 10
    assert result["kills_inside_a_checkpoint_write"] >= 1, "no kill landed inside a checkpoint write"
    assert result["finished"] and result["leftovers"] == []
    assert result["same_weights"] and result["same_metrics"]


def test_a_run_with_two_workers_killed_and_resumed_ends_bit_identical_to_one_without_workers(tmp_path):
    # augmentation seeded by (seed, epoch, index) over three epochs: persistent workers must see each epoch
    short = ["--augment", "albumentations", "--max-steps", "12", "--set", "dataset.train_size=32", "--set", "train.eval_every=4"]
    result = kill_and_resume(tmp_path, kills=1, whole_args=[*short, "--set", "data.num_workers=0"],
                             killed_args=[*short, "--set", "data.num_workers=2"])  # fmt: skip
    assert result["kills"] == 1 and result["finished"]
    assert result["same_weights"] and result["same_metrics"]
