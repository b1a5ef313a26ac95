"""A no-op writes only what changed: a run over an unchanged tree and an unchanged bucket
inserts, updates and deletes no row of `files` or `remote_objects` (counted by triggers on
the real journal file), and stages no row of its scan or LIST either (diff staging, on
both journals: the run's -v lines say what it staged), while a run after an edit and a
removal changes exactly those rows. At 10M files, rewriting every row each night was
gigabytes of WAL for nothing."""

from __future__ import annotations

import re
import time

from journalsync.scan import RACY_WINDOW_NS

TABLES = ("files", "remote_objects")


def count_changes(sync) -> None:
    """Triggers that log every row change of TABLES into a table of their own (in each
    journal's own trigger language)."""
    sync.journal_rows("CREATE TABLE row_changes (tbl TEXT, op TEXT)")
    if sync.on_pg:
        sync.journal_rows("CREATE FUNCTION count_change() RETURNS trigger LANGUAGE plpgsql AS "
                          "$$ BEGIN INSERT INTO row_changes VALUES (TG_TABLE_NAME, TG_OP); "
                          "RETURN NULL; END $$")
    for table in TABLES:
        for op in ("INSERT", "UPDATE", "DELETE"):
            if sync.on_pg:
                sync.journal_rows(f"CREATE TRIGGER count_{table}_{op} AFTER {op} ON {table} "
                                  "FOR EACH ROW EXECUTE FUNCTION count_change()")
            else:
                sync.journal_rows(f"CREATE TRIGGER count_{table}_{op} AFTER {op} ON {table} "
                                  f"BEGIN INSERT INTO row_changes VALUES ('{table}', '{op}'); END")


def changes(sync) -> dict[tuple[str, str], int]:
    rows = sync.journal_rows("SELECT tbl, op, count(*) FROM row_changes GROUP BY tbl, op")
    sync.journal_rows("DELETE FROM row_changes")
    return {(tbl, op): n for tbl, op, n in rows}


def staged(result) -> dict[str, int]:
    """What the run's scan and LIST staged, from its -v lines."""
    return {m[1]: int(m[2]) for m in re.finditer(r"(scan|manifest): [^\n]*? (\d+) staged", result.err)}


def test_noop_changes_no_row_and_a_change_only_its_rows(sync):
    for i in range(30):
        sync.write(f"d{i % 3}/f{i:02}.txt", b"content %d" % i)
    sync.write("/".join(["x" * 250] * 5) + "/long", b"over S3's key limit: a file error")
    # Past the racy window, so the first run's hashes are final (no re-hash on the next run).
    time.sleep(RACY_WINDOW_NS / 1e9 + 0.2)
    first = sync.run("-v")
    assert (first.code, first.summary["uploaded"]) == (1, "30"), first.err  # 1: the long key
    assert staged(first) == {"scan": 30, "manifest": 0}, first.err
    count_changes(sync)

    noop = sync.run("-v")
    assert (noop.code, noop.summary["uploaded"]) == (1, "0"), noop.err
    assert changes(sync) == {}
    assert staged(noop) == {"scan": 0, "manifest": 0}, noop.err

    sync.write("d0/f00.txt", b"edited, and longer")
    (sync.src / "d1/f01.txt").unlink()
    edit = sync.run("-v")
    assert (edit.code, edit.summary["uploaded"]) == (1, "1"), edit.err
    assert staged(edit) == {"scan": 2, "manifest": 0}, edit.err  # the edited file, the gone one
    seen = changes(sync)
    # The edited file's row twice (the scan's new stat, then the hash its upload read:
    # lazy hashing), the removed file's once; none of the other 28.
    assert seen[("files", "UPDATE")] == 2 and seen[("files", "DELETE")] == 1, seen
    assert ("files", "INSERT") not in seen and ("remote_objects", "DELETE") not in seen, seen
