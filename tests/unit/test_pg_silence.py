"""A host that goes silent inside a journal write (partitioned or frozen between a statement
and its COMMIT) on a PostgreSQL journal: the rows that write locked must come free within its
lease, as its chunks' and units' claims do, not when the server gives up on the connection
(TCP keepalive: about two hours by default). Its takeover needs them: a new owner of a large
file marks the old upload aborted (multipart.py, sharedparts.py) or unjournals its parts."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid

from journalsync.journal import Journal
from journalsync.journal.location import PgLocation
from journalsync.journal.uploads import UploadRecord

# The silent host: opens the job with a lease of 2 s, updates the upload's row inside a write
# transaction, says so, and hangs with its connection up.
_SILENT = """
import sys, time
from sqlalchemy import text
from journalsync.journal import Journal
from journalsync.journal.location import PgLocation
journal = Journal(PgLocation(sys.argv[1], sys.argv[2]), lease=2.0)
with journal._write() as conn:
    conn.execute(text("UPDATE multipart_uploads SET state = 'completed' WHERE upload_id = 'u1'"))
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_write_gone_silent_frees_its_rows_within_its_lease(pg_url):
    location = PgLocation(pg_url, f"t_{uuid.uuid4().hex[:12]}")
    with Journal(location) as journal:
        run = journal.start_run("/src", "s3://b/p", None, False)
        journal.record_upload(UploadRecord("u1", "big.bin", run, 5, 10, 1, 1, 1, "ab", 1.0,
                                           "active"), None)
    silent = subprocess.Popen([sys.executable, "-c", _SILENT, pg_url, location.job],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert silent.stdout.readline() == "held\n"
        with Journal(location) as journal:
            done = threading.Event()
            taker = threading.Thread(target=lambda: (journal.set_upload_state("u1", "aborted"),
                                                     done.set()), daemon=True)
            taker.start()
            # Not a timing assert: 2 s is the silent host's lease; without a bound on its
            # silence the update waits for the server to drop the connection (hours).
            taker.join(60)
            freed = done.is_set()
            if not freed:
                silent.kill()  # frees the row, so the takeover (and the journal's close) ends
                taker.join()
            assert freed, "the takeover still waited for the silent host's row lock"
            assert journal.active_uploads() == []
    finally:
        silent.kill()
        silent.wait()
