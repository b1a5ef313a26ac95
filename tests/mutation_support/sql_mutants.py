"""Mutants of the SQL that decides which staged files are hashed again
(Journal.iter_files_to_hash). mutmut leaves triple-quoted strings alone, so the SQL gets
its own small set of operator mutations here: each one applied to a single spot in the
statement, the method swapped for one that runs the mutated SQL, and the scan's unit
tests run in this process. A mutant that every test passes survives."""

from __future__ import annotations

import contextlib
import inspect
import io
import re

import pytest
from sqlalchemy import text

from journalsync.journal.store import Journal

TESTS = ["tests/unit/test_scan_changes.py", "tests/unit/test_scan.py"]

# (what to find, what to put in its place), applied to one occurrence at a time.
OPERATORS = [
    (r" IS NOT (?=s\.)", " IS "),  # a changed identity field read as unchanged
    (r" IS NULL\b", " IS NOT NULL"),
    (r" IS NOT NULL\b", " IS NULL"),
    (r"\bOR\b", "AND"),
    (r"\bLEFT JOIN\b", "JOIN"),
    (r"\bWHERE s\.error IS NULL AND\b", "WHERE"),
    (r"\s*ORDER BY s\.key", ""),
]
# The parenthesised OR list of reasons a staged file changed since the last scan.
OR_LIST = re.compile(r"\(\((f\.key IS NULL.*?)\)\s*AND", re.S)


def original_sql() -> str:
    source = inspect.getsource(Journal.iter_files_to_hash)
    return re.search(r'text\("""(.*?)"""\)', source, re.S).group(1)


def _near(sql: str, start: int, end: int) -> str:
    """The words around a spot of the SQL, as a label."""
    before = " ".join(sql[:start].split()[-3:])
    after = " ".join(sql[end:].split()[:3])
    return f"{before} [{sql[start:end].strip()}] {after}"


def mutants(sql: str) -> list[tuple[str, str]]:
    """(label, mutated SQL) for every operator at every place it applies, and for every
    condition of the OR list dropped."""
    out = []
    for pattern, replacement in OPERATORS:
        for match in re.finditer(pattern, sql):
            out.append((f"{_near(sql, match.start(), match.end())} -> {replacement.strip()!r}",
                        sql[:match.start()] + replacement + sql[match.end():]))
    group = OR_LIST.search(sql)
    conditions = re.split(r"\s+OR\s+", group.group(1).strip())
    for i, condition in enumerate(conditions):
        rest = " OR ".join(conditions[:i] + conditions[i + 1:])
        out.append((f"drop [{condition}]",
                    sql[:group.start(1)] + rest + sql[group.end(1):]))
    return out


def run_tests() -> int:
    with contextlib.redirect_stdout(io.StringIO()):
        return pytest.main(["-x", "-q", "-p", "no:cacheprovider", *TESTS])


def run() -> tuple[int, list[str]]:
    """Run every SQL mutant; return (total, labels of the survivors)."""
    original = Journal.iter_files_to_hash
    survivors = []
    found = mutants(original_sql())
    try:
        for label, sql in found:
            def mutated(self, _sql=sql):
                yield from self._stage_pages(text(_sql), {"all_changed": False})
            Journal.iter_files_to_hash = mutated
            if run_tests() == 0:
                survivors.append(label)
    finally:
        Journal.iter_files_to_hash = original
    if run_tests() != 0:
        raise SystemExit("the scan tests fail on the unmutated SQL")
    return len(found), survivors


if __name__ == "__main__":
    total, left = run()
    print(f"iter_files_to_hash SQL: {total - len(left)}/{total} killed")
    for label in left:
        print(f"  survived  {label}")
