"""Two owners of one shared upload making its units at once (journal/partunits.py), on two
connections of one PostgreSQL journal, interleaved: A has looked for units and found none,
then B makes its own and commits, then A inserts. Returns what each was told and the units
the journal holds after."""

from __future__ import annotations

import threading
import time
import uuid

from sqlalchemy import event, text

from journalsync.journal import Journal, UploadRecord
from journalsync.journal.location import PgLocation


def make_units_interleaved(pg_url: str, a_groups, b_groups) -> tuple[int, list[int], list[tuple]]:
    where = PgLocation(pg_url, f"t_{uuid.uuid4().hex[:12]}")
    with Journal(where) as a, Journal(where) as b:
        run_id = a.start_run("/src", "s3://b/p", None, False)
        a.record_upload(UploadRecord("up-1", "big.bin", run_id, 5, 25, 1, 1, 1, "ab" * 32,
                                     time.time(), "active"), None)
        b_made: list[int] = []
        interleaved = threading.Event()

        def b_first(conn, cursor, statement, *args):
            if statement.lstrip().upper().startswith("INSERT INTO PART_UNITS") \
                    and not interleaved.is_set():
                interleaved.set()
                other = threading.Thread(target=lambda: b_made.append(
                    b.make_part_units(run_id, "up-1", b_groups)))
                other.start()
                other.join(30)

        event.listen(a._engine, "before_cursor_execute", b_first)
        try:
            a_made = a.make_part_units(run_id, "up-1", a_groups)
        finally:
            event.remove(a._engine, "before_cursor_execute", b_first)
        assert interleaved.is_set(), "A never inserted units"
        with a._engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(text(
                "SELECT first_part, last_part FROM part_units WHERE upload_id = 'up-1'"
                " ORDER BY first_part")).all()]
    return a_made, b_made, rows
