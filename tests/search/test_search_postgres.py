"""Search workers sharing one study on a real PostgreSQL (`.ci/run` starts one and sets
MMREG_TEST_POSTGRES_URL): trials neither lost nor duplicated, a killed worker's trial failed by
its missing heartbeat and retried by another worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from test_search import TINY

URL = os.environ.get("MMREG_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not URL, reason="no PostgreSQL: MMREG_TEST_POSTGRES_URL is unset (.ci/run starts one)")


def worker(where: Path, study: str, trials: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    args = ["search", "s.toml", "--storage", URL, "--study", study, "--trials", str(trials), "--heartbeat", "1", "--pruner", "none", "--json"]  # sharing, not pruning, is under test
    return subprocess.Popen([sys.executable, "-m", "mmreg", *args], cwd=where, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str]) -> dict:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out)


def trials_of(study: str) -> list:
    import optuna

    return optuna.load_study(study_name=study, storage=URL).get_trials(deepcopy=False)


def test_two_workers_share_one_study_and_a_killed_workers_trial_is_retried(tmp_path):
    (tmp_path / "s.toml").write_text(TINY + '\n[search]\n"train.lr" = {low = 1e-4, high = 1e-2, log = true}\n')
    study = f"shared-{uuid.uuid4().hex[:8]}"
    first, second = worker(tmp_path, study, 2), worker(tmp_path, study, 2)
    finish(first), finish(second)
    trials = trials_of(study)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # the sum asked for, none lost or duplicated
    assert {t.state.name for t in trials} == {"COMPLETE"}
    assert len({t.user_attrs["run_dir"] for t in trials}) == 4

    killed = f"killed-{uuid.uuid4().hex[:8]}"
    victim = worker(tmp_path, killed, 1)
    deadline = time.monotonic() + 120
    while not any(t.state.name == "RUNNING" for t in _trials_or_none(killed)):
        assert victim.poll() is None and time.monotonic() < deadline, victim.stderr.read() if victim.stderr else ""
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    time.sleep(3)  # past the grace period of two missed heartbeats
    summary = finish(worker(tmp_path, killed, 1))
    rows = {r["number"]: r for r in summary["rows"]}
    assert rows[0]["state"] == "fail" and "heartbeat" in rows[0]["reason"]
    assert rows[1]["state"] == "complete" and rows[1]["retry_of"] == 0
    assert rows[1]["params"] == rows[0]["params"]


def _trials_or_none(study: str) -> list:
    import optuna

    try:
        return trials_of(study)
    except KeyError:  # the worker has not created the study yet
        return []
    except optuna.exceptions.StorageInternalError:
        return []
