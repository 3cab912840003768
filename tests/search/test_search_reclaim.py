"""A killed search worker's trial on the default journal storage, which has no heartbeats: failed with
the dead worker named and retried with the same parameters when a search next opens the study, so the
study still ends with the trials asked for; `--heartbeat` is refused there rather than ignored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import psutil
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState
from test_search import PLUGIN, TINY, mmreg

from mmreg.errors import ConfigError
from mmreg.search import plan_search, reclaim_dead_trials, worker_identity


def journal(path: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(path)))


def running(study: optuna.Study, x: float, worker: dict | None, started: datetime | None = None) -> int:
    """Add a running trial with param ``x``, owned by ``worker`` (none recorded when None)."""
    trial = optuna.trial.create_trial(
        state=TrialState.RUNNING, params={"x": x}, distributions={"x": FloatDistribution(0, 10)}, user_attrs={"worker": worker} if worker else None
    )
    trial.datetime_start = started or datetime.now()
    study.add_trial(trial)
    return len(study.trials) - 1


def test_running_trials_of_dead_workers_on_this_host_are_failed_and_retried_once(tmp_path):
    storage = journal(tmp_path / "study.journal")
    study = optuna.create_study(study_name="s", storage=storage)
    me = worker_identity()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    dead = {**me, "pid": gone.pid, "started": psutil.Process(gone.pid).create_time()}
    gone.wait()
    killed = running(study, 1.0, dead)
    alive = running(study, 2.0, me)
    reused = running(study, 3.0, {**me, "started": me["started"] - 100})  # this pid, but an earlier process
    elsewhere = running(study, 4.0, {**dead, "host": "another-host"})  # not visible from here: left alone
    unowned = running(study, 5.0, None, datetime.now() - timedelta(minutes=2))
    starting = running(study, 6.0, None)  # its worker may be between Optuna's ask and recording itself

    assert reclaim_dead_trials(study, storage) == [killed, reused, unowned]
    again = journal(tmp_path / "study.journal")  # another search opening the study finds nothing more to do
    assert reclaim_dead_trials(optuna.load_study(study_name="s", storage=again), again) == []
    trials = study.trials
    assert {trials[n].state for n in (alive, elsewhere, starting)} == {TrialState.RUNNING}
    assert trials[killed].user_attrs["fail_reason"].startswith(f"its worker, pid {gone.pid} on {me['host']}, died while running it")
    assert f"pid {os.getpid()}" in trials[reused].user_attrs["fail_reason"]
    assert trials[unowned].user_attrs["fail_reason"].startswith("its worker died before recording itself (running 12")
    retries = trials[6:]
    assert [(t.state, t.system_attrs["failed_trial"], t.params, t.user_attrs) for t in retries] == [
        (TrialState.WAITING, n, trials[n].params, {}) for n in (killed, reused, unowned)
    ]  # fmt: skip


def test_heartbeat_is_refused_for_a_journal_storage(tmp_path):
    with pytest.raises(ConfigError, match="--heartbeat needs an RDB --storage"):
        plan_search(tmp_path / "s.toml", heartbeat=5)
    (tmp_path / "s.toml").write_text(TINY + '\n[search]\n"train.lr" = {}\n')
    result = mmreg("search", "s.toml", "--heartbeat", "5", cwd=tmp_path)
    assert result.returncode == 2 and "--heartbeat needs an RDB --storage" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_killed_search_on_the_journal_is_failed_and_retried_by_the_next(tmp_path):
    (tmp_path / "s.toml").write_text(TINY + '\n[loss.hold]\n\n[search]\n"train.lr" = {}\n')
    (tmp_path / "hold").touch()  # the first trial waits at its first step until killed
    args = ["--plugin", PLUGIN, "search", "s.toml", "--trials", "2", "--pruner", "none", "--json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMREG_")}
    victim = subprocess.Popen([sys.executable, "-m", "mmreg", *args], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    path, deadline = tmp_path / "runs" / "s" / "study.journal", time.monotonic() + 120
    while not any(t.state == TrialState.RUNNING and "run_dir" in t.user_attrs for t in _trials(path)):
        assert victim.poll() is None and time.monotonic() < deadline, victim.stderr.read() if victim.stderr else ""
        time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    victim.stderr.close()
    (tmp_path / "hold").unlink()

    result = mmreg(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    rows = summary["rows"]
    assert [r["state"] for r in rows] == ["fail", "complete", "complete"] and summary["states"] == {"fail": 1, "complete": 2}
    assert rows[0]["reason"].startswith(f"its worker, pid {victim.pid} on ") and "died while running it" in rows[0]["reason"]
    assert rows[1]["retry_of"] == 0 and rows[1]["params"] == rows[0]["params"]  # the retry is one of the 2 trials asked for
    assert rows[2]["retry_of"] is None


def _trials(path: Path) -> list[optuna.trial.FrozenTrial]:
    if not path.exists():
        return []
    try:
        return optuna.load_study(study_name="s", storage=journal(path)).get_trials(deepcopy=False)
    except KeyError:  # the search has not created the study yet
        return []
