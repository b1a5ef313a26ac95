"""The delete guard's exact words and boundaries: the reason a refusal prints is the one line
a user reads before nothing is deleted, so it is checked whole, not by a fragment."""

from __future__ import annotations

import pytest

from journalsync.errors import ExitCode
from journalsync.guard import DeleteFacts, DeletePolicy, Verdict, check_deletes


def facts(planned=5, remote_total=100, scanned=95, journal_files=100, errors=0):
    return DeleteFacts(planned, remote_total, scanned, journal_files, errors)


@pytest.mark.parametrize("f, policy, expected", [
    (facts(planned=0), DeletePolicy(), "pass: nothing to delete"),
    (facts(errors=2), DeletePolicy(), "refuse: 2 error(s) in this run, so nothing is deleted"),
    (facts(scanned=0, journal_files=7), DeletePolicy(),
     "refuse: the source is empty; the journal remembers 7 files (an unmounted disk?); "
     "--allow-empty-source to mirror an empty directory"),
    (facts(scanned=0, journal_files=0), DeletePolicy(),
     "refuse: the source is empty; --allow-empty-source to mirror an empty directory"),
    (facts(planned=11), DeletePolicy(),
     "refuse: would delete 11 of 100 objects (11.0%), over --max-delete-percent 10; --force to allow"),
    (facts(planned=5), DeletePolicy(max_count=4),
     "refuse: would delete 5 of 100 objects (5.0%), over --max-delete 4; --force to allow"),
    (facts(planned=50), DeletePolicy(force=True),
     "pass: 50 of 100 objects (50.0%); limits overridden by --force"),
    (facts(planned=5), DeletePolicy(), "pass: 5 of 100 objects (5.0%), within the limits"),
])
def test_verdict_reads_whole(f, policy, expected):
    assert str(check_deletes(f, policy)) == expected


def test_max_delete_is_inclusive():
    assert check_deletes(facts(planned=4), DeletePolicy(max_count=4)).allowed
    assert not check_deletes(facts(planned=4), DeletePolicy(max_count=3)).allowed


def test_one_of_one_object_is_all_of_them():
    """A single object under the prefix: deleting it is 100%, not 50%."""
    verdict = check_deletes(facts(planned=1, remote_total=1), DeletePolicy(max_percent=60))
    assert (verdict.allowed, verdict.exit_code) == (False, ExitCode.GUARD)
    assert "1 of 1 objects (100.0%)" in verdict.reason


def test_verdict_str():
    assert str(Verdict(True, "why")) == "pass: why"
    assert str(Verdict(False, "why", ExitCode.GUARD)) == "refuse: why"
