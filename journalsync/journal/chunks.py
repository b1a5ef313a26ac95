"""Work units for many workers: chunks of a run's uploads, claimed under a lease and fenced
by epoch, and the workers that hold them. Mixed into Journal (store.py), whose connections,
lock and helpers it relies on.

Why the journal's own rows and not a queue library: a chunk's completion and its items'
states must commit together, and only while the writer still owns the chunk. Both live in
this database, so one transaction does it: it first updates the chunk `WHERE epoch = :mine`
and, when that touches no row (the lease expired and someone else claimed it, bumping the
epoch), rolls the whole batch back.

The SQL is SQLAlchemy Core and portable to PostgreSQL: a claim is one UPDATE … RETURNING
whose row is picked by a sub-select `FOR UPDATE SKIP LOCKED` (SQLite, which has no row
locks and serializes writers anyway, leaves that clause out), so two claimers never get one
chunk. Lease times are the database's clock where there is one to share (PostgreSQL:
clock_timestamp(), so hosts whose clocks drift apart still agree on when a lease ends), and
this host's (time.time()) for SQLite, whose writers all run on one host.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence

from sqlalchemy import Connection, and_, func, insert, literal, or_, select, text, update
from sqlalchemy.sql.elements import ColumnElement

from journalsync.journal.schema import chunks, plan_items, runs, workers
from journalsync.models import Action, ItemStatus, PlanItem

log = logging.getLogger("journalsync")

_PENDING_IN_CHUNK = ("EXISTS (SELECT 1 FROM plan_items p WHERE p.chunk_id = chunks.id"
                     " AND p.status = 'pending')")


def limit_silence(conn: Connection, lease: float) -> None:
    """PostgreSQL: within this transaction, which locks a chunk's row, the server ends the
    session once it has idled in it for `lease` (the same limit the lease sets on a silent
    holder). A process whose host is partitioned or gone between its UPDATE and its COMMIT
    would otherwise hold the lock until the server notices the dead connection (TCP
    keepalive: two hours by default), and claims skip locked rows: its chunk would wait
    that long past its lease. SQLite: nothing (a dead process's lock dies with it)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT set_config('idle_in_transaction_session_timeout', :ms, true)"),
                     {"ms": str(max(1, round(lease * 1000)))})


def rerun_if_session_lost(method: Callable) -> Callable:
    """For a fenced write (one that calls limit_silence): when its session was ended under
    it, run it once more on a new connection. The server ends the session of a process
    that went silent inside such a transaction (SIGSTOP, a partition that comes back); its
    transaction is rolled back whole, and the write is fenced by epoch, so running it again
    is safe: on a chunk or unit claimed meanwhile it writes nothing and says so (lost).
    Without this, a holder that came back after its lease exited 5 ("is PostgreSQL
    running there?") instead of dropping what it had lost and going on. Any other error,
    and a second lost session in a row, is raised.

    The first run's COMMIT may have landed with only its answer lost (a link cut after it
    reached the server). A write that closes a chunk or unit then finds it done at its own
    epoch (done_at_epoch) and says so; renewals, upserts and releases are the same again.
    A claim is not: its chunk or unit stays claimed by this process unknown to it until
    its lease expires, and the run again claims another."""
    from sqlalchemy.exc import DBAPIError

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            log.warning("journal session lost (%s); %s again on a new connection", reason,
                        method.__name__)
        return method(self, *args, **kwargs)

    return wrapper


def done_at_epoch(conn: Connection, table, row_id: int, epoch: int) -> bool:
    """Whether a chunk or unit is done at `epoch`: then its holder at that epoch closed it
    (a claim moves the epoch on, and every write of one is fenced by it), and what that
    holder wrote with the close is in. A fenced write run again after a lost session
    (rerun_if_session_lost) whose first COMMIT did land finds this, and is not lost."""
    return conn.execute(select(table.c.id).where(
        table.c.id == row_id, table.c.epoch == epoch, table.c.state == "done")).first() \
        is not None


def _alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (a reused pid reads as alive: then the
    lease decides, as for a holder on another host)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def clock_sql(pg: bool) -> ColumnElement:
    """Now, in epoch seconds, as SQL: the database's clock on PostgreSQL (clock_timestamp(),
    which moves within a transaction, unlike now()), this host's on SQLite."""
    if pg:
        return func.extract("epoch", func.clock_timestamp())
    return literal(time.time())


class ChunkFence:
    """What record_results (plans.py) asks, inside its transaction, when it writes a chunk's
    results: `hold` first (is the chunk still ours? if not nothing is written), `close` last
    (the chunk is done once no row of it is pending). `state` says how it went: lost, open
    or done."""

    def __init__(self, chunk_id: int, epoch: int, lease: float, pg: bool = False):
        self.chunk_id, self.epoch, self.lease, self.pg = chunk_id, epoch, lease, pg
        self.state = "open"

    def hold(self, conn: Connection) -> bool:
        limit_silence(conn, self.lease)
        held = conn.execute(update(chunks).where(
            chunks.c.id == self.chunk_id, chunks.c.epoch == self.epoch,
            chunks.c.state == "claimed").values(
            lease_until=clock_sql(self.pg) + self.lease)).rowcount
        if not held:
            self.state = "done" if done_at_epoch(conn, chunks, self.chunk_id, self.epoch) \
                else "lost"
        return bool(held)

    def close(self, conn: Connection) -> None:
        done = conn.execute(text(f"""
            UPDATE chunks SET state = 'done', done_at = :now, lease_until = NULL
            WHERE id = :c AND epoch = :e AND state = 'claimed' AND NOT {_PENDING_IN_CHUNK}"""),
            {"now": time.time(), "c": self.chunk_id, "e": self.epoch}).rowcount
        if done:
            self.state = "done"


class ChunkStore:

    # -- chunking -------------------------------------------------------------------------

    def make_chunks(self, run_id: int, max_files: int, max_bytes: int) -> int:
        """Group the run's pending uploads that have no chunk into chunks of at most
        `max_files` files and `max_bytes` bytes (a larger file is a chunk alone), in plan
        order. A resumed run's chunks stay: those with nothing pending are done, done ones
        with rows pending again (failed items retried) are pending again; claimed ones are
        left to their holders (a worker that kept going while the run restarted) and to
        their leases. Returns how many chunks were made."""
        now = time.time()
        with self._write() as conn:
            conn.execute(text(f"""
                UPDATE chunks SET state = 'done', done_at = :now, lease_until = NULL
                WHERE run_id = :run AND state = 'pending' AND NOT {_PENDING_IN_CHUNK}"""),
                {"run": run_id, "now": now})
            conn.execute(text(f"""
                UPDATE chunks SET state = 'pending', owner = NULL, lease_until = NULL,
                                  done_at = NULL
                WHERE run_id = :run AND state = 'done' AND {_PENDING_IN_CHUNK}"""),
                {"run": run_id})
        stmt = (select(plan_items.c.id, plan_items.c.size)
                .where(plan_items.c.run_id == run_id,
                       plan_items.c.action == Action.UPLOAD.value,
                       plan_items.c.status == ItemStatus.PENDING.value,
                       plan_items.c.chunk_id.is_(None))
                .order_by(plan_items.c.id))
        groups: list[list[int]] = []  # [first id, last id, files, bytes]
        for item_id, size in self._stream(stmt):
            size = size or 0
            last = groups[-1] if groups else None
            if last is None or last[2] >= max_files or (last[2] and last[3] + size > max_bytes):
                groups.append([item_id, item_id, 1, size])
            else:
                last[1], last[2], last[3] = item_id, last[2] + 1, last[3] + size
        for start in range(0, len(groups), 200):
            with self._write() as conn:
                for lo, hi, count, size in groups[start:start + 200]:
                    chunk_id = conn.execute(insert(chunks).values(
                        run_id=run_id, state="pending", files=count, bytes=size, epoch=0)
                    ).inserted_primary_key[0]
                    conn.execute(update(plan_items).where(
                        plan_items.c.run_id == run_id, plan_items.c.id.between(lo, hi),
                        plan_items.c.action == Action.UPLOAD.value,
                        plan_items.c.status == ItemStatus.PENDING.value,
                        plan_items.c.chunk_id.is_(None)).values(chunk_id=chunk_id))
        return len(groups)

    # -- claims, leases, fenced results ---------------------------------------------------

    @rerun_if_session_lost
    def claim_chunk(self, run_id: int, owner: int, lease: float,
                    largest_first: bool = False) -> tuple[int, int] | None:
        """Take a chunk that is pending, or claimed under an expired lease: owner, lease
        and epoch + 1 in one statement. Returns (chunk id, epoch), or None.

        `largest_first` (the workers): the largest such chunk (ties in plan order), as in
        LPT scheduling, so the chunks claimed last are small and the hosts finish close
        together (bench/hosts.py on 4 hosts, one run each: 0.60 of linear scaling in plan
        order, 0.82 largest first). The run itself claims in plan order while it works
        alone: on one host it would otherwise put a big file's pre-hash ahead of every
        small file and the first upload byte (mixed tree: first send 1.4-1.7 s in plan
        order, 2.3-2.7 s largest first)."""
        now = clock_sql(self._pg)
        claimable = and_(chunks.c.run_id == run_id, or_(
            chunks.c.state == "pending",
            and_(chunks.c.state == "claimed", chunks.c.lease_until < now)))
        order = (chunks.c.bytes.desc(), chunks.c.id) if largest_first else (chunks.c.id,)
        pick = (select(chunks.c.id).where(claimable).order_by(*order).limit(1)
                .with_for_update(skip_locked=True).scalar_subquery())
        stmt = (update(chunks).where(chunks.c.id == pick, claimable)
                .values(state="claimed", owner=owner, epoch=chunks.c.epoch + 1,
                        lease_until=now + lease, claimed_at=now)
                .returning(chunks.c.id, chunks.c.epoch))
        with self._write() as conn:
            limit_silence(conn, lease)
            row = conn.execute(stmt).first()
        return (int(row[0]), int(row[1])) if row else None

    def release_dead_holders(self, run_id: int) -> int:
        """Give back the chunks held by processes of this host that are gone (a killed run or
        worker): a lease cannot tell a dead holder from a slow one, but this host can, so a
        `run --resume` after a SIGKILL claims them at once instead of after the lease (30 s
        by default; measured: every resume after a kill took that much longer). Fenced by
        epoch like any write of a chunk; a holder on another host waits for its lease."""
        host = socket.gethostname()
        held = select(chunks.c.id, chunks.c.epoch, workers.c.pid).join(
            workers, workers.c.id == chunks.c.owner).where(
            chunks.c.run_id == run_id, chunks.c.state == "claimed", workers.c.host == host)
        with self._read() as conn:
            rows = conn.execute(held).all()
        released = 0
        for chunk_id, epoch, pid in rows:
            if pid != os.getpid() and not _alive(pid):
                released += self.release_chunk(chunk_id, epoch)
        return released

    @rerun_if_session_lost
    def renew_lease(self, chunk_id: int, epoch: int, lease: float) -> bool:
        """Extend a held chunk's lease. False: the chunk is no longer ours (its epoch moved
        on, or it is done)."""
        with self._write() as conn:
            limit_silence(conn, lease)
            return bool(conn.execute(update(chunks).where(
                chunks.c.id == chunk_id, chunks.c.epoch == epoch, chunks.c.state == "claimed"
            ).values(lease_until=clock_sql(self._pg) + lease)).rowcount)

    @rerun_if_session_lost
    def release_chunk(self, chunk_id: int, epoch: int, lease: float = 30.0) -> bool:
        """Give back a chunk we hold but stop working (a signal, a fatal error): anyone may
        claim it at once instead of after its lease. Fenced like every write of a chunk."""
        with self._write() as conn:
            limit_silence(conn, lease)
            return bool(conn.execute(update(chunks).where(
                chunks.c.id == chunk_id, chunks.c.epoch == epoch, chunks.c.state == "claimed"
            ).values(state="pending", owner=None, lease_until=None)).rowcount)

    @rerun_if_session_lost
    def record_chunk_results(self, chunk_id: int, epoch: int, results: Sequence,
                             lease: float) -> str:
        """Record results of a chunk's items only while the chunk is still ours, in one
        transaction with the check (and the chunk's completion when nothing of it is left
        pending). Returns lost (nothing was recorded), open or done."""
        fence = ChunkFence(chunk_id, epoch, lease, self._pg)
        self.record_results(results, fence=fence)
        return fence.state

    def chunk_items(self, chunk_id: int) -> list[PlanItem]:
        """The rows of a chunk still to upload, in plan order, with their local paths (as
        PlanStore.claim_batch gives them). Rows already done by a former holder are not
        sent again."""
        stmt = text("""
            SELECT p.id, p.key, p.action, p.reason, p.size, p.sha256, f.path,
                   f.mtime_ns, f.ctime_ns, f.inode, f.sha256 AS f_sha256
            FROM plan_items p LEFT JOIN files f ON f.key = p.key
            WHERE p.chunk_id = :chunk AND p.status = 'pending'
            ORDER BY p.id""")
        with self._read() as conn:
            rows = conn.execute(stmt, {"chunk": chunk_id}).all()
        return [PlanItem(r.id, r.key, Action(r.action), r.reason, r.size, r.sha256, r.path,
                         *((r.mtime_ns, r.ctime_ns, r.inode) if r.f_sha256 == r.sha256 else ()))
                for r in rows]

    def chunk_counts(self, run_id: int) -> dict[str, int]:
        """A run's chunks by state (pending, claimed, done)."""
        stmt = (select(chunks.c.state, func.count()).where(chunks.c.run_id == run_id)
                .group_by(chunks.c.state))
        with self._read() as conn:
            found = dict(conn.execute(stmt).all())
        return {state: int(found.get(state, 0)) for state in ("pending", "claimed", "done")}

    def chunks_left(self, run_id: int) -> int:
        """Chunks of the run not done yet (pending, or held by someone)."""
        counts = self.chunk_counts(run_id)
        return counts["pending"] + counts["claimed"]

    # -- runs and workers -----------------------------------------------------------------

    def active_run(self) -> dict | None:
        """The newest run still marked running, with its binding, if it is not a dry run."""
        stmt = (select(runs).where(runs.c.state == "running", runs.c.dry_run.is_(False))
                .order_by(runs.c.id.desc()).limit(1))
        with self._read() as conn:
            row = conn.execute(stmt).mappings().first()
        return dict(row) if row else None

    def run_state(self, run_id: int) -> tuple[str, float | None]:
        """(state, planned_at) of a run."""
        with self._read() as conn:
            row = conn.execute(select(runs.c.state, runs.c.planned_at)
                               .where(runs.c.id == run_id)).first()
        return (row[0], row[1]) if row else ("gone", None)

    @property
    def shared(self) -> bool:
        """Whether many hosts may share this journal (PostgreSQL): their leases and
        heartbeats are then kept by its clock."""
        return self._pg

    def clock(self) -> float:
        """Now by the clock leases and heartbeats are kept in (clock_sql), for showing
        their ages."""
        if not self._pg:
            return time.time()
        with self._read() as conn:
            return float(conn.execute(select(clock_sql(True))).scalar_one())

    def register_worker(self, run_id: int) -> int:
        now = clock_sql(self._pg)
        with self._write() as conn:
            return int(conn.execute(insert(workers).values(
                run_id=run_id, host=socket.gethostname(), pid=os.getpid(), started_at=now,
                heartbeat_at=now, chunks_done=0, bytes_done=0, state="working")
            ).inserted_primary_key[0])

    def worker_beat(self, worker_id: int, chunks_done: int, bytes_done: int,
                    state: str | None = None) -> None:
        values = {"heartbeat_at": clock_sql(self._pg), "chunks_done": chunks_done,
                  "bytes_done": bytes_done}
        if state:
            values["state"] = state
        with self._write() as conn:
            conn.execute(update(workers).where(workers.c.id == worker_id).values(**values))

    def working_peers(self, run_id: int, worker_id: int, lease: float) -> int:
        """How many other processes are working the run's chunks now: marked working,
        heard from within a lease (each beats every lease/3), and, on this host, alive. A
        killed process's row stays marked working for ever: counted, a run resumed alone
        after a killed worker would claim largest first, its first byte later, for good."""
        stmt = select(workers.c.host, workers.c.pid).where(
            workers.c.run_id == run_id, workers.c.id != worker_id,
            workers.c.state == "working",
            workers.c.heartbeat_at >= clock_sql(self._pg) - lease)
        host = socket.gethostname()
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        return sum(1 for h, p in rows if h != host or _alive(p))

    def run_workers_rows(self, run_id: int) -> list[dict]:
        """The run's workers. chunks_done is counted from the chunks each one closed, not
        taken from its own tally: a process killed between two heartbeats never wrote its
        last ones (bytes_done stays the tally, as of its last heartbeat)."""
        closed = (select(func.count()).select_from(chunks)
                  .where(chunks.c.owner == workers.c.id, chunks.c.state == "done")
                  .scalar_subquery())
        stmt = (select(*[c for c in workers.c if c.name != "chunks_done"],
                       closed.label("chunks_done"))
                .where(workers.c.run_id == run_id).order_by(workers.c.id))
        with self._read() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings().all()]

    def prune_chunks(self) -> None:
        """Drop the chunks, part units and workers of runs the history no longer holds (housekeeping
        prunes runs; these have no foreign key to hold it back)."""
        with self._write() as conn:
            conn.execute(text("DELETE FROM chunks WHERE run_id NOT IN (SELECT id FROM runs)"))
            conn.execute(text("DELETE FROM workers WHERE run_id NOT IN (SELECT id FROM runs)"))
            conn.execute(text("DELETE FROM part_units WHERE run_id NOT IN (SELECT id FROM runs)"))
