"""PostgreSQL: the hot paths' batches as one statement over arrays (unnest), not a statement
per row. The plan's rows and the workers' results (plans.py) go to SQLite as executemany,
which costs SQLite a loop in C; psycopg's executemany sends each row as a statement of its
own, which the server parses, plans and runs one by one, and the client adapts one by one:
on a first run of 20,000 small files each batch of results took 3 such statements per
file. Here each is one statement per batch, with its columns as binary arrays. Measured on
that run (2 runs each, a 2-core machine at load 2-4): the 100 batches of results took
6.8-7.3 s of the run's thread, 4.9-5.0 s so; the 42 batches of plan rows 1.3 s, 0.6 s; the
server's CPU 4.7-4.8 s, 4.1-4.2 s. The run's wall time did not move measurably (47-50 s
either way): what is left of a batch is its round trips (BEGIN, the fence's two, three
writes, the close, COMMIT), and the upload phase is bound by CPU, not by these writes.

The statements are PostgreSQL's own (run on the driver's cursor, pg.translate does not see
them). One statement may not touch a row twice (ON CONFLICT DO UPDATE refuses to), so rows
repeated in a batch are folded first, the last one kept, as executemany's last write wins.
"""

from __future__ import annotations

from collections.abc import Sequence

PLAN_ROWS = """
    INSERT INTO plan_items (run_id, key, action, reason, size, sha256, etag, status, attempts,
                            bytes_sent, updated_at)
    SELECT %(run)b, v.key, v.action, v.reason, v.size, v.sha256, v.etag, 'pending', 0, 0, %(now)b
    FROM unnest(%(key)b::text[], %(action)b::text[], %(reason)b::text[], %(size)b::int8[],
                %(sha256)b::text[], %(etag)b::text[])
         WITH ORDINALITY AS v(key, action, reason, size, sha256, etag, n)
    ORDER BY v.n"""  # ids in the batch's order: chunks and the plan's order follow them

ITEMS = """
    UPDATE plan_items p SET status = v.status, attempts = v.attempts,
                            bytes_sent = v.bytes_sent, error = v.error, updated_at = %(now)b
    FROM unnest(%(id)b::int8[], %(status)b::text[], %(attempts)b::int8[],
                %(bytes_sent)b::int8[], %(error)b::text[])
         AS v(id, status, attempts, bytes_sent, error)
    WHERE p.id = v.id"""

UPLOADED = """
    INSERT INTO remote_objects (key, size, etag, sha256, sha_source, last_modified)
    SELECT v.key, v.size, v.etag, v.sha256, 'upload', %(now)b
    FROM unnest(%(key)b::text[], %(size)b::int8[], %(etag)b::text[], %(sha256)b::text[])
         AS v(key, size, etag, sha256)
    ON CONFLICT (key) DO UPDATE SET size = excluded.size, etag = excluded.etag,
        sha256 = excluded.sha256, sha_source = excluded.sha_source,
        last_modified = excluded.last_modified"""

# As plans.py's statement for SQLite: the MD5 stays only with this very SHA-256.
HASHED = """
    UPDATE files f SET md5 = CASE WHEN f.sha256 = v.sha256 THEN f.md5 END,
                       sha256 = v.sha256, size = v.size, mtime_ns = v.mtime_ns,
                       ctime_ns = v.ctime_ns, inode = v.inode
    FROM unnest(%(k)b::text[], %(sha256)b::text[], %(size)b::int8[], %(mtime_ns)b::int8[],
                %(ctime_ns)b::int8[], %(inode)b::int8[])
         AS v(k, sha256, size, mtime_ns, ctime_ns, inode)
    WHERE f.key = v.k AND f.scan_error IS NULL"""


def columns(rows: Sequence[dict], names: Sequence[str], fold: str | None = None,
            **scalars) -> dict:
    """The parameters of one of these statements: a list per column of `rows` (None where
    a row has no such key; folded on the column `fold`, the last row of a value kept), and
    `scalars` as they are."""
    if fold is not None:
        rows = list({r[fold]: r for r in rows}.values())
    return {**{name: [r.get(name) for r in rows] for name in names}, **scalars}
