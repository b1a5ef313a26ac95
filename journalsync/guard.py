"""The delete guard: deletes must be impossible to trigger by accident.

The classic disaster is an unmounted disk or an empty prefix meeting a mirror job with
deletes enabled. So deletes need `--delete`; they happen only after every upload
succeeded and nothing else went wrong in the run; an empty source is refused unless
`--allow-empty-source`; and more than `--max-delete-percent` (default 10) of the objects
under the prefix, or more than `--max-delete`, is refused unless `--force`. Refusing
deletes nothing at all: the check runs before the first delete.

One exception to "after the uploads": the deletes a planned upload needs done first (an
extra under its key + `/`, or an extra that is a directory of its key: a store over a
filesystem cannot hold both) go before the uploads, once this check has passed the run's
whole delete set (deletefirst.deletes_first). Its refusal then stands for the run.

`check_deletes` is pure, so its table of cases is the specification.
"""

from __future__ import annotations

from dataclasses import dataclass

from journalsync.errors import ExitCode


@dataclass(frozen=True, slots=True)
class DeleteFacts:
    """What the guard knows about a run when its uploads are over."""

    planned: int  # deletes in the plan
    remote_total: int  # objects under the prefix at the LIST
    scanned: int  # regular files found under the source
    journal_files: int  # files the journal remembered before this run's scan
    errors: int  # scan, list and upload errors in this run


@dataclass(frozen=True, slots=True)
class DeletePolicy:
    max_percent: float = 10.0
    max_count: int | None = None
    force: bool = False
    allow_empty_source: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: str
    exit_code: ExitCode = ExitCode.OK  # what a refusal exits with

    def __str__(self) -> str:
        return f"{'pass' if self.allowed else 'refuse'}: {self.reason}"


def check_deletes(facts: DeleteFacts, policy: DeletePolicy) -> Verdict:
    """May the run delete its planned extras?

    | situation                                      | verdict | exit |
    |------------------------------------------------|---------|------|
    | nothing planned                                | pass    |      |
    | any error in the run                           | refuse  | 1    |
    | source empty, no --allow-empty-source          | refuse  | 3    |
    | over --max-delete-percent, no --force          | refuse  | 3    |
    | over --max-delete, no --force                  | refuse  | 3    |
    | otherwise                                      | pass    |      |
    """
    if facts.planned == 0:
        return Verdict(True, "nothing to delete")
    if facts.errors:
        return Verdict(False, f"{facts.errors} error(s) in this run, so nothing is deleted",
                       ExitCode.PARTIAL)
    if facts.scanned == 0 and not policy.allow_empty_source:
        remembered = (f"; the journal remembers {facts.journal_files} files (an unmounted disk?)"
                      if facts.journal_files else "")
        return Verdict(False, f"the source is empty{remembered}; --allow-empty-source to "
                              "mirror an empty directory", ExitCode.GUARD)
    percent = 100.0 * facts.planned / max(1, facts.remote_total)
    share = f"{facts.planned} of {facts.remote_total} objects ({percent:.1f}%)"
    if not policy.force and percent > policy.max_percent:
        return Verdict(False, f"would delete {share}, over --max-delete-percent "
                              f"{policy.max_percent:g}; --force to allow", ExitCode.GUARD)
    if not policy.force and policy.max_count is not None and facts.planned > policy.max_count:
        return Verdict(False, f"would delete {share}, over --max-delete {policy.max_count}; "
                              "--force to allow", ExitCode.GUARD)
    if policy.force:
        return Verdict(True, f"{share}; limits overridden by --force")
    return Verdict(True, f"{share}, within the limits")
