"""One large file sent by many workers (issue 15): its parts as claimable units sharing its
one journaled UploadId. Only on a shared journal (PostgreSQL), only for a file of more than
one unit (--part-unit), and only when other processes work the run when its upload begins
(alone, a run sends it as before: multipart.py). SQLite never comes here.

The owner (the process holding the file's chunk):
1. pre-hashes the file (SHA-256 and each part's CRC64-NVME in one read: prehash.py), even
   when the scan hashed it: the object's metadata must hold the SHA-256 of the bytes sent
   before the first part (no stream then stamp here: one reader would have to read every
   part in order), and the CRCs are what every other sender checks its own read against;
2. creates the upload and journals it (multipart.py's _create), then its units: ranges of
   about --part-unit bytes of whole parts, each with its parts' CRCs (journal/partunits.py);
3. claims and sends units of its own upload like anyone, then waits until every unit is
   done, taking over any whose lease expires;
4. re-checks the file's identity, checks ListParts against the journal (every part held
   and journaled at its size, with the pre-hash's CRC where the store lists one; not by
   ETag: not_held), Completes with the journaled parts, and HEADs (size and sha256
   metadata) as every multipart upload does. A part the store does not hold as journaled
   is unjournaled and its unit reopened, sent again, checked again (REOPENS times at most,
   then the upload is aborted).

Any process with no chunk to claim claims a unit (chunkwork.py), opens the file at its own
source path, checks that it is the file the upload was created for (size, mtime, ctime,
inode), and sends each part of the unit not yet journaled as partsend.py sends a
pre-hashed part: the CRT reads it from the file as it sends it, with its Content-MD5 (read
just before, and checked to be of the part pre-hashed by its CRC) or its CRC64-NVME, and
the CRC of what it read must equal the owner's; without the CRT (--bwlimit), the part is
read into a buffer, its CRC checked, and its Content-MD5 or CRC taken from that buffer.
The store checks what arrives, so each part's bytes are the pre-hashed bytes end to end.
Each part is journaled (with `sent_by`) in one transaction with the unit's fence: a killed
sender's finished parts are not sent again, only those it had in flight.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from concurrent.futures import Future, wait

from awscrt.checksums import crc64nvme
from botocore.exceptions import ClientError

from journalsync.errors import Interrupted
from journalsync.integrity import MD5, BodyCheck, of_crc
from journalsync.journal.partunits import PartUnit
from journalsync.models import PlanItem, TransferResult
from journalsync.multipart import MultipartDriver, _as_scanned, part_size_for
from journalsync.objectmeta import file_identity, metadata_sha256, read_identity
from journalsync.partsend import FileChanged, UploadGone
from journalsync.prehash import PreHash, prehash
from journalsync.retry import Attempts, error_code, fatal_reason, is_retryable
from journalsync.safeio import open_source
from journalsync.sharedrules import REOPENS, not_held, unit_bytes_among

log = logging.getLogger(__name__)

CHANGED = "changed during upload; the upload was aborted and the next run retries it"


class UnitLost(Exception):
    """The unit's lease expired and another worker claimed it: its parts are not ours."""


class SharedParts:
    """This process's side of shared uploads: the owner's upload, and units of anyone's."""

    def __init__(self, driver: MultipartDriver, unit_bytes: int):
        self.driver, self.journal, self.cfg = driver, driver.journal, driver.cfg
        self.unit_bytes = unit_bytes
        self.worker_id: int | None = None
        self.lease = 30.0
        self._lock = threading.Lock()
        self._held: dict[int, tuple[PartUnit, threading.Event]] = {}
        self._skip: set[str] = set()  # uploads whose file is not the one here

    def bind(self, worker_id: int, lease: float) -> None:
        """Called by chunkwork once this process is registered as a worker of the run."""
        self.worker_id, self.lease = worker_id, lease

    # -- the owner -------------------------------------------------------------------------

    def unit_for(self, item: PlanItem, st: os.stat_result) -> int:
        """The bytes per unit this file's upload is shared in, or 0: not shared. Shared on a
        shared journal, in more than one unit, when there is a shared upload of it to
        continue, or a file multipart.py would pre-hash anyway (sharing then costs no extra
        read: over 5 GiB, a versioned bucket, --large-files prehash...; workers that join
        later still help), or others working the run now. Alone, a file the scan hashed or
        one that would be streamed (stamp.py) is sent as before: a pre-hash would be one
        more read of it."""
        if self.worker_id is None or not self.journal.shared:
            return 0
        part = part_size_for(st.st_size, self.cfg.part_size)
        if st.st_size <= 2 * part:
            return 0
        rec = self.journal.active_upload_for(item.key)
        if rec is not None:
            # An upload begun goes on as it began: through its units (make_part_units keeps
            # them), else by multipart.py, which continues its journaled parts (a streamed
            # one's hash included); made shared now, its first pre-hash would not match it.
            return self.unit_bytes if self.journal.unit_crcs(rec.upload_id) else 0
        hashed = item.sha256 is not None and _as_scanned(st, item)
        if not hashed and not self.driver.large.streams(st.st_size) and st.st_size > self.unit_bytes:
            return self.unit_bytes
        others = self.journal.other_workers(self.driver.run_id, self.lease)
        if others <= 0:
            return 0
        unit = unit_bytes_among(st.st_size, part, self.unit_bytes, others)
        return unit if st.st_size > unit else 0

    def upload(self, item: PlanItem, path: str, counter: Attempts, fh,
               st: os.stat_result, unit: int) -> TransferResult:
        d = self.driver
        part_size = part_size_for(st.st_size, self.cfg.part_size)
        with d.hash_slots:
            if d.stop.is_set():
                raise Interrupted("stopped before its upload began")
            pre = prehash(fh, part_size, md5s=False, stop=d.stop)
        if file_identity(os.fstat(fh.fileno())) != file_identity(st):
            raise FileChanged("kept changing while it was hashed; the next run retries it")
        rec = self._resumable(item, st, pre)
        if rec is None:
            rec = d._create(item, st, pre.sha256)
        try:
            return self._own(item, path, fh, st, rec, pre, counter, unit)
        except UploadGone:
            done = self._completed_elsewhere(item, fh, st, rec, pre, counter, 0)
            if done is not None:
                return done
            self.journal.set_upload_state(rec.upload_id, "aborted")
            raise
        except Interrupted:
            raise
        except Exception as exc:
            if not (is_retryable(exc) or fatal_reason(exc)):
                d._abort_quietly(rec)
            raise

    def _resumable(self, item: PlanItem, st: os.stat_result, pre: PreHash):
        rec = self.journal.active_upload_for(item.key)
        if rec is None:
            return None
        crcs = self.journal.unit_crcs(rec.upload_id)
        if ((rec.size, rec.mtime_ns, rec.ctime_ns, rec.inode) != file_identity(st)
                or rec.sha256 != pre.sha256 or rec.part_size != pre.part_size
                or any(pre.part_crcs[n - 1] != crc for n, crc in crcs.items())):
            log.info("%s changed since its upload began; aborting that upload", item.key)
            self.driver._abort_quietly(rec)
            return None
        # The journal's parts are what some process was told; the store says what it holds.
        try:
            held = self.driver.held_parts(rec.key, rec.upload_id)
        except ClientError as exc:
            if error_code(exc) != "NoSuchUpload":
                raise
            self.journal.set_upload_state(rec.upload_id, "aborted")
            log.warning("upload of %s is gone from the server; starting a new one", item.key)
            return None
        journaled = self.journal.part_rows(rec.upload_id)
        self.journal.forget_parts(rec.upload_id, not_held(rec, pre, sorted(journaled),
                                                          journaled, held))
        log.info("continuing the shared upload of %s: the server holds %d part(s)", item.key,
                 len(held))
        return rec

    def _own(self, item, path, fh, st, rec, pre: PreHash, counter: Attempts,
             unit: int) -> TransferResult:
        d = self.driver
        count = max(1, math.ceil(rec.size / rec.part_size))
        per = max(1, unit // rec.part_size)
        groups = [(lo, min(count, lo + per - 1), pre.part_crcs[lo - 1:min(count, lo + per - 1)])
                  for lo in range(1, count + 1, per)]
        made = self.journal.make_part_units(d.run_id, rec.upload_id, groups)
        log.info("sharing %s: %d part(s) in %d unit(s)", item.key, count, made)
        sent = self._work_units(rec, fh)
        counter.count += 1
        for check in range(1 + REOPENS):
            done = self._complete(item, path, fh, st, rec, pre, counter, sent,
                                  reopen=check < REOPENS)
            if done is not None:
                return done
            sent += self._work_units(rec, fh)  # the units reopened
        raise AssertionError("unreachable")  # pragma: no cover

    def _work_units(self, rec, fh) -> int:
        """Claim and send units of the owner's own upload until none is left, waiting for
        (or taking over) those others hold. Returns the bytes this thread sent."""
        d = self.driver
        sent = 0
        while True:
            if d.stop.is_set():
                raise Interrupted("stopped before every part was sent; --resume continues")
            unit = self.journal.claim_part_unit(d.run_id, self.worker_id, self.lease,
                                                upload_id=rec.upload_id)
            if unit is not None:
                try:
                    sent += self._send_unit(unit, rec, fh.fileno())
                except UnitLost:
                    pass  # its new holder sends the rest
                continue
            if not self.journal.units_left(rec.upload_id):
                return sent
            # Units of an upload no longer active are never claimed (cleanup --abort, another
            # holder of this file's chunk that aborted it): waiting for them would be for ever.
            now = self.journal.upload_record(rec.upload_id)
            if now is None or now.state != "active":
                raise UploadGone(f"upload {rec.upload_id} was aborted while its parts were sent")
            d.stop.wait(min(1.0, self.lease / 3))  # others hold units: wait, or take over

    def _complete(self, item, path, fh, st, rec, pre: PreHash, counter: Attempts,
                  sent: int, reopen: bool) -> TransferResult | None:
        """Check every part against the store (not_held) and Complete. A part the store
        does not hold as journaled: with `reopen`, unjournal it and reopen its unit (None:
        the caller sends those units again and checks again); else abort (FileChanged)."""
        d = self.driver
        if file_identity(os.fstat(fh.fileno())) != file_identity(st) or \
                file_identity(os.stat(path, follow_symlinks=False)) != file_identity(st):
            raise FileChanged(CHANGED)
        journaled = self.journal.part_rows(rec.upload_id)
        try:
            held = d.held_parts(rec.key, rec.upload_id)
        except ClientError as exc:
            if error_code(exc) == "NoSuchUpload":
                done = self._completed_elsewhere(item, fh, st, rec, pre, counter, sent)
                if done is not None:
                    return done
                raise UploadGone(f"upload {rec.upload_id} is gone") from exc
            raise
        count = max(1, math.ceil(rec.size / rec.part_size))
        bad = not_held(rec, pre, range(1, count + 1), journaled, held)
        if bad and not reopen:
            raise FileChanged(f"part {bad[0]} on the store is not the part journaled; "
                              "the upload was aborted and the next run sends it again")
        if bad:
            log.warning("%s: the store does not hold part(s) %s as journaled; sending their "
                        "unit(s) again", item.key, ", ".join(map(str, bad)))
            self.journal.forget_parts(rec.upload_id, bad)
            return None
        parts = []
        for number in range(1, count + 1):
            check = of_crc(pre.part_crcs[number - 1]) if d.clients.body_check != MD5 \
                else BodyCheck(MD5, "")
            # The ETag the store answered the part's UploadPart with, as S3 asks of a
            # Complete (its ListParts may give the same part's ETag in another form).
            parts.append({"PartNumber": number, "ETag": journaled[number][0],
                          **check.completed_part})
        etag = d._complete(item, rec, parts, rec.sha256)
        self.journal.set_upload_state(rec.upload_id, "completed")
        return self._result(item, fh, st, pre, counter, sent, etag)

    def _completed_elsewhere(self, item, fh, st, rec, pre: PreHash, counter: Attempts,
                             sent: int) -> TransferResult | None:
        """The upload is gone: completed by another holder of this file's upload (a former
        owner paused past its lease, its chunk taken over here, that came back and went on)
        when the object now is this file (its size and sha256 metadata, the file unchanged
        since it was hashed); then this file is done, not failed. None otherwise."""
        d = self.driver
        if file_identity(os.fstat(fh.fileno())) != file_identity(st):
            return None
        client = d.clients.get()
        try:
            head = d._call(lambda: client.head_object(
                Bucket=self.cfg.dest.bucket, Key=self.cfg.dest.object_key(item.key)))
        except ClientError:
            return None
        if head["ContentLength"] != st.st_size or rec.sha256 != pre.sha256 or \
                metadata_sha256(head.get("Metadata")) != pre.sha256:
            return None
        log.info("upload %s of %s was completed by another holder; the object is this file",
                 rec.upload_id, item.key)
        self.journal.set_upload_state(rec.upload_id, "completed")
        return self._result(item, fh, st, pre, counter, sent, head["ETag"].strip('"'))

    def _result(self, item, fh, st, pre: PreHash, counter: Attempts, sent: int,
                etag: str) -> TransferResult:
        # This call's parts count for its process's tally; the rest were counted by the
        # processes (or this one's other threads: chunkwork) that sent them as units.
        others = max(0, st.st_size - sent)
        return TransferResult(item.id, item.key, True, counter.count, bytes_sent=sent,
                              size=st.st_size, etag=etag, sha256=pre.sha256,
                              file_identity=read_identity(st, os.fstat(fh.fileno()),
                                                          pre.started_ns),
                              others_sent=others)

    # -- anyone's units --------------------------------------------------------------------

    def claim(self, run_id: int) -> PartUnit | None:
        if self.worker_id is None:
            return None
        with self._lock:
            skip = sorted(self._skip)
        return self.journal.claim_part_unit(run_id, self.worker_id, self.lease, skip=skip)

    def work_may_come(self, run_id: int) -> bool:
        """Units to claim now, or a claimed chunk with a file its owner may share: over
        two parts and a multipart (unit_for shares such a file in units of about one per
        process while others work, far under --part-unit)."""
        return self.journal.part_work_may_come(
            run_id, max(2 * self.cfg.part_size, self.cfg.multipart_threshold - 1))

    def send_unit(self, unit: PartUnit) -> int:
        """Send a unit claimed by chunkwork (another process's file, as a rule). Never
        raises: a failure gives the unit back for another try. Returns the bytes sent."""
        try:
            rec = self.journal.upload_record(unit.upload_id)
            rel = self.journal.shared_upload_source(unit.upload_id)
            if rec is None or rec.state != "active" or rel is None:
                return 0
            with open_source(str(self.cfg.source), rel) as fh:
                if file_identity(os.fstat(fh.fileno())) != (rec.size, rec.mtime_ns,
                                                            rec.ctime_ns, rec.inode):
                    raise FileChanged(f"{rec.key} here is not the file its upload was "
                                      "created for")
                return self._send_unit(unit, rec, fh.fileno())
        except UnitLost:
            log.warning("lost part unit %d (its lease expired and another worker claimed "
                        "it); dropping it", unit.id)
            return 0
        except Exception as exc:  # noqa: BLE001 - the unit goes back; the owner decides
            if isinstance(exc, (FileChanged, OSError)):
                with self._lock:
                    self._skip.add(unit.upload_id)
            log.warning("part unit %d (parts %d-%d): %s; giving it back", unit.id, unit.first,
                        unit.last, exc)
            self.journal.release_unit(unit.id, unit.epoch, self.lease)  # again: harmless
            return 0

    def _send_unit(self, unit: PartUnit, rec, fd: int) -> int:
        """Send the parts of `unit` not journaled yet, concurrently; close the unit."""
        lost = threading.Event()
        with self._lock:
            self._held[unit.id] = (unit, lost)
        try:
            have = self.journal.part_rows(unit.upload_id)
            futures: list[Future] = []
            try:
                for number in range(unit.first, unit.last + 1):
                    if number in have:
                        continue
                    if lost.is_set() or self.driver.stop.is_set() or \
                            any(f.done() and f.exception() for f in futures):
                        break
                    # Slots taken here, before the part is queued (as partsend.py's _read_part
                    # does: buffer slot, then part slot), never on a pool thread: queued parts
                    # of other files must not wait behind pool threads that wait for slots.
                    parts = self.driver.parts
                    parts.buffer_slots.acquire()
                    parts.part_slots.acquire()
                    try:
                        futures.append(parts.part_pool.submit(
                            self._send_part, unit, rec, fd, number, lost))
                    except BaseException:
                        parts.part_slots.release()
                        parts.buffer_slots.release()
                        raise
            finally:
                wait(futures)
            sent = sum(f.result() for f in futures)  # re-raises the first failure
            if lost.is_set():
                raise UnitLost()
            if self.driver.stop.is_set():
                raise Interrupted("stopped before every part was sent; --resume continues")
            if not self.journal.close_unit(unit, self.lease):
                raise UnitLost()
            return sent
        except UnitLost:
            raise
        except BaseException:
            # A failed part or a stop: the unit goes back at once, not at its lease's end
            # (fenced: nothing happens if it is someone else's by now).
            self.journal.release_unit(unit.id, unit.epoch, self.lease)
            raise
        finally:
            with self._lock:
                self._held.pop(unit.id, None)

    def _send_part(self, unit: PartUnit, rec, fd: int, number: int,
                   lost: threading.Event) -> int:
        d, parts = self.driver, self.driver.parts
        buf, ok = None, False
        try:
            if lost.is_set():
                return 0
            length = min(rec.part_size, rec.size - (number - 1) * rec.part_size)
            crt = d.clients.crt() if d.clients.bandwidth is None else None
            if crt is not None:  # as partsend's pre-hashed parts: no buffer of ours
                etag = self._stream(crt, unit, rec, fd, number, length)
                if not self.journal.record_unit_part(unit, number, etag, length,
                                                     self.worker_id, self.lease):
                    lost.set()
                return length
            buf = parts.buffers.take(rec.part_size)
            view = memoryview(buf)[:length]
            got, offset = 0, (number - 1) * rec.part_size
            while got < length:
                n = os.preadv(fd, [view[got:]], offset + got)
                if not n:
                    break
                got += n
            if got != length or crc64nvme(view) != unit.crc(number):
                raise FileChanged(CHANGED)
            etag = self._put(rec, number, view)
            if not self.journal.record_unit_part(unit, number, etag, length, self.worker_id,
                                                 self.lease):
                lost.set()
            ok = True
            return length
        finally:  # the slots _send_unit took for this part
            parts.part_slots.release()
            parts.buffer_slots.release()
            if ok:
                parts.buffers.give(buf)

    def _stream(self, crt, unit: PartUnit, rec, fd: int, number: int, length: int) -> str:
        """Send part `number` as partsend.py sends a pre-hashed part (read by the CRT from
        `fd`), checked against the unit's journaled CRC of that part."""
        crcs = [0] * number
        crcs[number - 1] = unit.crc(number)
        pre = PreHash(rec.sha256, rec.part_size, tuple(crcs), (), 0)  # this part's CRC
        parts = self.driver.parts
        send, _ = parts.file_part_sender(crt, rec, number, fd, length, pre,
                                         FileChanged(CHANGED))
        return parts.call_part(rec, send, Attempts())

    def _put(self, rec, number: int, data: memoryview) -> str:
        parts = self.driver.parts
        send, _ = parts.buffer_part_sender(parts.clients.parts_crt(), rec, number, data)
        return parts.call_part(rec, send, Attempts())

    def renew(self) -> None:
        """Called by chunkwork's heartbeat: extend the leases of the units being sent."""
        with self._lock:
            held = list(self._held.values())
        for unit, lost in held:
            if not lost.is_set() and not self.journal.renew_unit_lease(unit.id, unit.epoch,
                                                                        self.lease):
                lost.set()

    def release_all(self) -> None:
        """Give back the units still held (a stop): anyone may claim them at once."""
        with self._lock:
            held = list(self._held.values())
        for unit, _ in held:
            self.journal.release_unit(unit.id, unit.epoch, self.lease)
