"""A shared large file's parts as work units (sharedparts.py): ranges of part numbers of one
journaled UploadId, claimed under a lease and fenced by epoch exactly as chunks are
(chunks.py: the same claim statement shape, the same clock). Mixed into Journal (store.py).

Each part a sender finishes is journaled in one transaction with the check that its unit
is still the sender's (`record_unit_part`), so a worker killed mid-unit leaves every part
it finished journaled: whoever claims the unit next sends only the parts that were in
flight. A partitioned sender that comes back late records nothing (its epoch is stale).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select, text, update

from journalsync.journal.chunks import (
    _alive,
    clock_sql,
    done_at_epoch,
    limit_silence,
    rerun_if_session_lost,
)
from journalsync.journal.schema import multipart_parts, multipart_uploads, part_units, workers


@dataclass(frozen=True, slots=True)
class PartUnit:
    """A claimed range of parts: [first, last] of `upload_id`, each part's CRC64-NVME."""

    id: int
    epoch: int
    upload_id: str
    first: int
    last: int
    crcs: tuple[int, ...]

    def crc(self, number: int) -> int:
        return self.crcs[number - self.first]


class PartUnitStore:

    def make_part_units(self, run_id: int, upload_id: str,
                        groups: Sequence[tuple[int, int, Sequence[int]]]) -> int:
        """The units of a shared upload, (first, last, crcs) each, unless it has some
        already (a resumed owner): then those stay, and become this run's (a new run that
        continues a killed run's upload claims them by run: left to the dead run, nobody
        would, and the owner would wait for them for ever). Returns how many it has.

        The units are inserted in one statement, ON CONFLICT DO NOTHING on the unique
        (upload_id, first_part): another owner of the same upload that made them meanwhile
        (its insert committed after this one looked) keeps its units, and this one adds
        none of the same parts; on PostgreSQL the later insert waits for the earlier one's
        commit at the unique index, then skips."""
        with self._write() as conn:
            have = conn.execute(update(part_units).where(
                part_units.c.upload_id == upload_id).values(run_id=run_id)).rowcount
            if have:
                return int(have)
            made = conn.execute(self._upsert(part_units).values([
                {"run_id": run_id, "upload_id": upload_id, "first_part": first,
                 "last_part": last, "crcs": json.dumps(list(crcs)), "state": "pending",
                 "epoch": 0} for first, last, crcs in groups]).on_conflict_do_nothing(
                index_elements=["upload_id", "first_part"]).returning(
                part_units.c.id)).scalars().all()
            if len(made) < len(groups):
                # Another owner's units came first (every grouping starts at part 1). Its
                # unit size may differ from this one's (unit_for counts the processes
                # working the run when each owner asks): this one's units that did not
                # collide would overlap its, and their parts be sent twice. Only its stay.
                conn.execute(part_units.delete().where(part_units.c.id.in_(made)))
            return int(conn.execute(select(func.count()).select_from(part_units).where(
                part_units.c.upload_id == upload_id)).scalar_one())

    def unit_crcs(self, upload_id: str) -> dict[int, int]:
        """{part number: CRC64-NVME} as the units of `upload_id` hold them."""
        stmt = select(part_units.c.first_part, part_units.c.crcs).where(
            part_units.c.upload_id == upload_id)
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        return {first + i: crc for first, crcs in rows for i, crc in enumerate(json.loads(crcs))}

    @rerun_if_session_lost
    def claim_part_unit(self, run_id: int, owner: int, lease: float,
                        upload_id: str | None = None,
                        skip: Sequence[str] = ()) -> PartUnit | None:
        """Take a unit of an active upload of the run (of `upload_id` only, when given; not
        of the uploads in `skip`) that is pending or claimed under an expired lease, in
        upload and part order: owner, lease, epoch + 1 in one statement."""
        now = clock_sql(self._pg)
        claimable = and_(part_units.c.run_id == run_id, or_(
            part_units.c.state == "pending",
            and_(part_units.c.state == "claimed", part_units.c.lease_until < now)))
        active = select(multipart_uploads.c.upload_id).where(
            multipart_uploads.c.state == "active")
        where = [claimable, part_units.c.upload_id.in_(active)]
        if upload_id is not None:
            where.append(part_units.c.upload_id == upload_id)
        if skip:
            where.append(part_units.c.upload_id.not_in(list(skip)))
        pick = (select(part_units.c.id).where(*where).order_by(part_units.c.id).limit(1)
                .with_for_update(skip_locked=True).scalar_subquery())
        stmt = (update(part_units).where(part_units.c.id == pick, claimable)
                .values(state="claimed", owner=owner, epoch=part_units.c.epoch + 1,
                        lease_until=now + lease, claimed_at=now)
                .returning(part_units.c.id, part_units.c.epoch, part_units.c.upload_id,
                           part_units.c.first_part, part_units.c.last_part, part_units.c.crcs))
        with self._write() as conn:
            limit_silence(conn, lease)
            row = conn.execute(stmt).first()
        if row is None:
            return None
        return PartUnit(int(row[0]), int(row[1]), row[2], int(row[3]), int(row[4]),
                        tuple(json.loads(row[5])))

    def _unit_held(self, conn, unit_id: int, epoch: int, lease: float) -> bool:
        limit_silence(conn, lease)
        return bool(conn.execute(update(part_units).where(
            part_units.c.id == unit_id, part_units.c.epoch == epoch,
            part_units.c.state == "claimed").values(
            lease_until=clock_sql(self._pg) + lease)).rowcount)

    @rerun_if_session_lost
    def renew_unit_lease(self, unit_id: int, epoch: int, lease: float) -> bool:
        with self._write() as conn:
            return self._unit_held(conn, unit_id, epoch, lease)

    @rerun_if_session_lost
    def record_unit_part(self, unit: PartUnit, number: int, etag: str, size: int,
                         worker_id: int, lease: float) -> bool:
        """Journal a part the store took, in one transaction with the check that `unit` is
        still ours. False: it is not (nothing was written)."""
        with self._write() as conn:
            if not self._unit_held(conn, unit.id, unit.epoch, lease):
                return False  # nothing written
            stmt = self._upsert(multipart_parts).values(
                upload_id=unit.upload_id, part_number=number, etag=etag, size=size,
                sent_by=worker_id)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["upload_id", "part_number"],
                set_={"etag": stmt.excluded.etag, "size": stmt.excluded.size,
                      "sent_by": stmt.excluded.sent_by}))
        return True

    @rerun_if_session_lost
    def close_unit(self, unit: PartUnit, lease: float) -> bool:
        """The unit is done once every part of it is journaled; fenced by epoch."""
        with self._write() as conn:
            limit_silence(conn, lease)
            return bool(conn.execute(text("""
                UPDATE part_units SET state = 'done', done_at = :now, lease_until = NULL
                WHERE id = :u AND epoch = :e AND state = 'claimed' AND
                      (SELECT count(*) FROM multipart_parts p WHERE p.upload_id = :up
                       AND p.part_number BETWEEN :lo AND :hi) = :hi - :lo + 1"""),
                {"now": time.time(), "u": unit.id, "e": unit.epoch, "up": unit.upload_id,
                 "lo": unit.first, "hi": unit.last}).rowcount) or \
                done_at_epoch(conn, part_units, unit.id, unit.epoch)

    @rerun_if_session_lost
    def release_unit(self, unit_id: int, epoch: int, lease: float = 30.0) -> bool:
        with self._write() as conn:
            limit_silence(conn, lease)
            return bool(conn.execute(update(part_units).where(
                part_units.c.id == unit_id, part_units.c.epoch == epoch,
                part_units.c.state == "claimed").values(
                state="pending", owner=None, lease_until=None)).rowcount)

    def release_dead_unit_holders(self, run_id: int) -> int:
        """As chunks.release_dead_holders, for units held by dead processes of this host."""
        held = select(part_units.c.id, part_units.c.epoch, workers.c.pid).join(
            workers, workers.c.id == part_units.c.owner).where(
            part_units.c.run_id == run_id, part_units.c.state == "claimed",
            workers.c.host == socket.gethostname())
        with self._read() as conn:
            rows = conn.execute(held).all()
        return sum(self.release_unit(u, e) for u, e, pid in rows
                   if pid != os.getpid() and not _alive(pid))

    def units_left(self, upload_id: str) -> int:
        """Units of `upload_id` not done."""
        stmt = select(func.count()).select_from(part_units).where(
            part_units.c.upload_id == upload_id, part_units.c.state != "done")
        with self._read() as conn:
            return int(conn.execute(stmt).scalar_one())

    def part_work_may_come(self, run_id: int, min_size: int) -> bool:
        """Whether the run has, or may soon have, units to claim: a unit of an active upload
        not done, or a claimed chunk with a pending upload larger than `min_size` (its
        holder may be pre-hashing it to share it)."""
        stmt = text("""
            SELECT EXISTS (SELECT 1 FROM part_units u JOIN multipart_uploads m
                             ON m.upload_id = u.upload_id
                           WHERE u.run_id = :run AND u.state != 'done' AND m.state = 'active')
                OR EXISTS (SELECT 1 FROM chunks c JOIN plan_items p ON p.chunk_id = c.id
                           WHERE c.run_id = :run AND c.state = 'claimed'
                             AND p.status = 'pending' AND p.size > :min)""")
        with self._read() as conn:
            return bool(conn.execute(stmt, {"run": run_id, "min": min_size}).scalar_one())

    def shared_upload_source(self, upload_id: str) -> str | None:
        """The local path (relative to the source) of a shared upload's file, as last
        scanned; None when the upload or its file is not known."""
        stmt = text("""SELECT coalesce(f.path, m.key) FROM multipart_uploads m
                       LEFT JOIN files f ON f.key = m.key WHERE m.upload_id = :u""")
        with self._read() as conn:
            return conn.execute(stmt, {"u": upload_id}).scalar()

    def upload_record(self, upload_id: str):
        from journalsync.journal.uploads import _upload_record

        with self._read() as conn:
            row = conn.execute(select(multipart_uploads).where(
                multipart_uploads.c.upload_id == upload_id)).mappings().first()
        return _upload_record(row) if row else None

    def part_rows(self, upload_id: str) -> dict[int, tuple[str, int, int | None]]:
        """{part number: (ETag, size, sent_by)} journaled for `upload_id`."""
        stmt = select(multipart_parts.c.part_number, multipart_parts.c.etag,
                      multipart_parts.c.size, multipart_parts.c.sent_by).where(
            multipart_parts.c.upload_id == upload_id)
        with self._read() as conn:
            return {r[0]: (r[1], int(r[2]), r[3]) for r in conn.execute(stmt).all()}

    def forget_parts(self, upload_id: str, numbers: Sequence[int]) -> None:
        """Parts journaled that the store does not hold as journaled (a resumed owner's
        ListParts): unjournal them, and reopen the done units they belong to, so they are
        sent again."""
        if not numbers:
            return
        with self._write() as conn:
            for number in numbers:
                conn.execute(text("DELETE FROM multipart_parts WHERE upload_id = :u"
                                  " AND part_number = :n"), {"u": upload_id, "n": number})
                conn.execute(text("""
                    UPDATE part_units SET state = 'pending', owner = NULL, lease_until = NULL,
                                          done_at = NULL
                    WHERE upload_id = :u AND state = 'done'
                      AND first_part <= :n AND last_part >= :n"""),
                    {"u": upload_id, "n": number})

    def shared_upload_progress(self) -> dict[str, dict]:
        """The part units of each shared upload in flight (an active upload that has units),
        by UploadId, for `status`: units_done, units_total, bytes_journaled (the sizes of
        its parts journaled), and holders: each process holding units of it now (host,
        pid, units, and lease_expired: how many of those its lease no longer covers,
        anyone's to take)."""
        units = text("""
            SELECT u.upload_id, count(*), sum(CASE WHEN u.state = 'done' THEN 1 ELSE 0 END),
                   (SELECT coalesce(sum(p.size), 0) FROM multipart_parts p
                    WHERE p.upload_id = u.upload_id)
            FROM part_units u JOIN multipart_uploads m ON m.upload_id = u.upload_id
            WHERE m.state = 'active' GROUP BY u.upload_id""")
        holders = text("""
            SELECT u.upload_id, w.host, w.pid, count(*),
                   sum(CASE WHEN u.lease_until < :now THEN 1 ELSE 0 END)
            FROM part_units u JOIN multipart_uploads m ON m.upload_id = u.upload_id
                 JOIN workers w ON w.id = u.owner
            WHERE m.state = 'active' AND u.state = 'claimed'
            GROUP BY u.upload_id, w.host, w.pid ORDER BY w.host, w.pid""")
        now = self.clock()  # the clock leases are kept by
        with self._read() as conn:
            found = {up: {"units_done": int(done or 0), "units_total": int(total),
                          "bytes_journaled": int(journaled), "holders": []}
                     for up, total, done, journaled in conn.execute(units).all()}
            for up, host, pid, held, expired in conn.execute(holders, {"now": now}).all():
                if up not in found:  # shared after the units' read (its own snapshot)
                    continue
                found[up]["holders"].append({"host": host, "pid": int(pid), "units": int(held),
                                             "lease_expired": int(expired or 0)})
        return found

    def other_workers(self, run_id: int, lease: float) -> int:
        """Processes other than this one working the run now: marked working, heard from
        within a lease (each beats every lease/3), and, on this host, alive. A killed
        process's row stays marked working for ever: counted, a run resumed alone would
        share its large files with no one."""
        stmt = select(workers.c.host, workers.c.pid).where(
            workers.c.run_id == run_id, workers.c.state == "working",
            workers.c.heartbeat_at >= clock_sql(self._pg) - lease)
        host, pid = socket.gethostname(), os.getpid()
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        return sum(1 for h, p in rows if h != host or (p != pid and _alive(p)))
