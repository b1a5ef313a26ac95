"""Deleting extras once the guard allows it: batched DeleteObjects (up to 1000 keys), and
one DeleteObject at a time where a provider lacks the batch call (GCS's S3 API)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection

from botocore.exceptions import ClientError

from journalsync.clients import ClientFactory
from journalsync.config import Config
from journalsync.errors import FatalRemoteError, Interrupted
from journalsync.journal import Journal
from journalsync.models import Action, PlanItem, TransferResult
from journalsync.objectmeta import NOT_IN_XML
from journalsync.presence import LocalPresence
from journalsync.report import FailureLines
from journalsync.retry import describe, error_code, fatal_reason, http_status

log = logging.getLogger(__name__)

BATCH_KEYS = 1000  # S3's limit per DeleteObjects
_NOT_SUPPORTED = {"NotImplemented", "MethodNotAllowed", "501", "405"}


class Deleter:
    def __init__(self, cfg: Config, clients: ClientFactory):
        self.cfg = cfg
        self.clients = clients
        self.one_by_one = not clients.preset.batch_delete

    def _call(self, fn):
        return self.clients.call(fn)

    def delete(self, items: list[PlanItem]) -> list[TransferResult]:
        """Delete a batch of keys; per-key failures come back as failed results, in the
        order of `items`."""
        if self.one_by_one:
            return [self._one(item) for item in items]
        # Keys DeleteObjects' XML body cannot carry (quiet mode would report the wrong key
        # as deleted) go one DeleteObject at a time.
        unsafe = lambda item: NOT_IN_XML.search(self.cfg.dest.object_key(item.key))  # noqa: E731
        alone = [item for item in items if unsafe(item)]
        batched = [item for item in items if not unsafe(item)]
        results = {id(item): self._one(item) for item in alone}
        results.update(zip(map(id, batched), self._batch_or_one_by_one(batched)))
        return [results[id(item)] for item in items]

    def _batch_or_one_by_one(self, items: list[PlanItem]) -> list[TransferResult]:
        if not items:
            return []
        try:
            return self._batch(items)
        except ClientError as exc:
            if error_code(exc) == "MalformedXML":  # a key this server's XML cannot carry
                log.info("DeleteObjects refused the batch (MalformedXML); deleting its keys one at a time")
                return [self._one(item) for item in items]
            if error_code(exc) not in _NOT_SUPPORTED and http_status(exc) not in (405, 501):
                raise
            log.info("DeleteObjects is not supported here; deleting one key at a time")
            self.one_by_one = True
        return [self._one(item) for item in items]

    def _batch(self, items: list[PlanItem]) -> list[TransferResult]:
        client = self.clients.get()
        objects = [{"Key": self.cfg.dest.object_key(item.key)} for item in items]
        resp = self._call(lambda: client.delete_objects(
            Bucket=self.cfg.dest.bucket, Delete={"Objects": objects, "Quiet": True}))
        errors = {e["Key"]: f"{e.get('Code')}: {e.get('Message', '')}".strip(": ")
                  for e in resp.get("Errors", ())}
        return [self._result(item, errors.get(self.cfg.dest.object_key(item.key))) for item in items]

    def _one(self, item: PlanItem) -> TransferResult:
        client = self.clients.get()
        try:
            self._call(lambda: client.delete_object(
                Bucket=self.cfg.dest.bucket, Key=self.cfg.dest.object_key(item.key)))
        except Interrupted:
            raise  # a second signal stops now, not after the remaining keys
        except Exception as exc:  # noqa: BLE001 - journaled per key
            fatal = fatal_reason(exc)
            return self._result(item, fatal or describe(exc), fatal=fatal is not None)
        return self._result(item, None)

    @staticmethod
    def _result(item: PlanItem, error: str | None, fatal: bool = False) -> TransferResult:
        return TransferResult(item.id, item.key, error is None, 1, error=error, fatal=fatal,
                              action=Action.DELETE)


ONE_BY_ONE_CHUNK = 25  # keys deleted one at a time between two looks at the source


def run_deletes(journal: Journal, run_id: int, deleter: Deleter, stop: threading.Event,
                presence: LocalPresence | None = None,
                failures: FailureLines | None = None,
                only: Collection[int] | None = None) -> int:
    """Delete every pending delete item of the run (with `only`, those of these ids; the
    others stay pending). With `presence`, the source is looked at again just before each
    request (one DeleteObjects of up to 1000 keys, or a few single deletes), and a file
    that is back cancels its delete. A stop is honoured as often. Returns the number of
    deletes cancelled because the file is back."""
    after, cancelled = 0, 0
    while batch := journal.claim_batch(run_id, after, BATCH_KEYS, Action.DELETE):
        after = batch[-1].id
        if only is not None:
            batch = [item for item in batch if item.id in only]
            if not batch:
                continue
        step = ONE_BY_ONE_CHUNK if deleter.one_by_one else len(batch)
        for start in range(0, len(batch), step):
            if stop.is_set():
                raise Interrupted("stopped before every delete was done")
            chunk = batch[start:start + step]
            if presence is not None:
                chunk, back = _still_absent(journal, presence, chunk)
                cancelled += back
            if chunk:
                _delete_batch(journal, deleter, chunk, failures or FailureLines())
    return cancelled


def _still_absent(journal: Journal, presence: LocalPresence,
                  items: list[PlanItem]) -> tuple[list[PlanItem], int]:
    """The items whose file is still absent; the others are cancelled in the journal."""
    presence.forget()  # what the source held a moment ago is not what it holds now
    back = [item for item in items if presence.present(item.key)]
    journal.cancel_items([(item.id, "not deleted: the local file exists again") for item in back])
    return [item for item in items if item not in back], len(back)


def _delete_batch(journal: Journal, deleter: Deleter, batch: list[PlanItem],
                  failures: FailureLines) -> None:
    try:
        results = deleter.delete(batch)
    except ClientError as exc:
        reason = fatal_reason(exc)
        if reason is not None:
            raise FatalRemoteError(f"stopped deleting: {reason}") from exc
        # Refused, not fatal: every key of the batch failed, each journaled with why.
        results = [Deleter._result(item, describe(exc)) for item in batch]
    journal.record_results(results)
    for item, result in zip(batch, results):
        if result.ok:
            log.info("deleted %s (%s)", item.key, item.reason)
        else:
            failures.add(result.key, result.error, "delete failed")
    fatal = next((r.error for r in results if r.fatal), None)
    if fatal:
        raise FatalRemoteError(f"stopped deleting: {fatal}")
