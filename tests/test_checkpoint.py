"""Checkpoint directories: made current by one atomic link replace, old ones removed only after."""

from __future__ import annotations

import os

import pytest

from mmreg.checkpoint import clean_checkpoints, commit_directory, read_state
from mmreg.errors import ConfigError


def writer(text: str):
    def write(directory):
        (directory / "a.txt").write_text(text)
        (directory / "b.txt").write_text(text)

    return write


def test_commit_replaces_the_link_and_removes_the_old_directory(tmp_path):
    first = commit_directory(tmp_path, "last", writer("one"))
    second = commit_directory(tmp_path, "last", writer("two"))
    assert os.readlink(tmp_path / "last") == second.name
    assert (tmp_path / "last" / "a.txt").read_text() == "two"
    assert not first.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last", second.name])


def test_a_write_that_fails_midway_leaves_the_previous_checkpoint_whole(tmp_path):
    commit_directory(tmp_path, "last", writer("one"))

    def broken(directory):
        (directory / "a.txt").write_text("two")
        raise OSError("disk full")

    with pytest.raises(OSError):
        commit_directory(tmp_path, "last", broken)
    assert [(tmp_path / "last" / f).read_text() for f in ("a.txt", "b.txt")] == ["one", "one"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_leftovers_of_a_killed_write_are_cleaned_and_best_is_kept(tmp_path):
    commit_directory(tmp_path, "last", writer("one"))
    best = commit_directory(tmp_path, "best", writer("b"))
    (tmp_path / ".last.dead.partial").mkdir()
    (tmp_path / ".last.dead.partial" / "a.txt").write_text("half")
    (tmp_path / "last.orphan").mkdir()
    os.symlink("last.orphan", tmp_path / ".last.dead.link")
    clean_checkpoints(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"last", "best", os.readlink(tmp_path / "last"), best.name}


def test_a_plain_directory_from_an_older_version_is_replaced(tmp_path):
    (tmp_path / "last").mkdir()
    (tmp_path / "last" / "a.txt").write_text("old")
    commit_directory(tmp_path, "last", writer("new"))
    assert (tmp_path / "last").is_symlink() and (tmp_path / "last" / "a.txt").read_text() == "new"
    assert len(list(tmp_path.iterdir())) == 2


def test_read_state_names_what_is_missing(tmp_path):
    with pytest.raises(ConfigError, match="before its first checkpoint"):
        read_state(tmp_path / "last")
    commit_directory(tmp_path, "last", writer("x"))
    with pytest.raises(ConfigError, match="state.json is missing"):
        read_state(tmp_path / "last")
