"""The delete guard's table of cases."""

from __future__ import annotations

import pytest

from journalsync.errors import ExitCode
from journalsync.guard import DeleteFacts, DeletePolicy, check_deletes


def facts(planned=5, remote_total=100, scanned=95, journal_files=100, errors=0):
    return DeleteFacts(planned, remote_total, scanned, journal_files, errors)


@pytest.mark.parametrize("f, policy, allowed, exit_code, words", [
    (facts(planned=0), DeletePolicy(), True, ExitCode.OK, "nothing to delete"),
    (facts(planned=5), DeletePolicy(), True, ExitCode.OK, "5 of 100 objects (5.0%), within"),
    (facts(planned=10), DeletePolicy(), True, ExitCode.OK, "(10.0%)"),  # the cap is inclusive
    (facts(planned=11), DeletePolicy(), False, ExitCode.GUARD, "over --max-delete-percent 10"),
    (facts(planned=50), DeletePolicy(), False, ExitCode.GUARD, "50 of 100 objects (50.0%)"),
    (facts(planned=50), DeletePolicy(force=True), True, ExitCode.OK, "overridden by --force"),
    (facts(planned=50), DeletePolicy(max_percent=60), True, ExitCode.OK, "within"),
    (facts(planned=5), DeletePolicy(max_count=4), False, ExitCode.GUARD, "over --max-delete 4"),
    (facts(planned=5), DeletePolicy(max_count=4, force=True), True, ExitCode.OK, "--force"),
    (facts(errors=1), DeletePolicy(force=True), False, ExitCode.PARTIAL, "1 error(s) in this run"),
    (facts(planned=100, scanned=0), DeletePolicy(force=True), False, ExitCode.GUARD,
     "source is empty; the journal remembers 100 files"),
    (facts(planned=100, scanned=0, journal_files=0), DeletePolicy(), False, ExitCode.GUARD,
     "--allow-empty-source"),
    (facts(planned=100, scanned=0), DeletePolicy(allow_empty_source=True), False, ExitCode.GUARD,
     "over --max-delete-percent"),
    (facts(planned=100, scanned=0), DeletePolicy(allow_empty_source=True, force=True), True,
     ExitCode.OK, "--force"),
    (facts(planned=1, remote_total=0), DeletePolicy(), False, ExitCode.GUARD, "1 of 0 objects"),
])
def test_check_deletes(f, policy, allowed, exit_code, words):
    verdict = check_deletes(f, policy)
    assert verdict.allowed is allowed
    assert verdict.exit_code == exit_code
    assert words in verdict.reason
