"""At least 40 kinds of bad input through the real `mmreg` executable: each one exit 2, one or two
lines on stderr, no traceback, no run directory, and every file already there left byte-identical."""

from __future__ import annotations

import pytest
from harness import CASES, check_refused, make_run, prepare_case


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("finished"))


def test_there_are_at_least_40_cases():
    assert len({c.id for c in CASES}) == len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_cleanly(case, tmp_path, request):
    finished = request.getfixturevalue("finished_run") if case.run else None
    prepare_case(case, tmp_path, finished)
    problem = check_refused(case, tmp_path)
    assert problem is None, problem
