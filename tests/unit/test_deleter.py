"""Deleter and run_deletes against moto's server in this process, through the recording
fault proxy: which requests carry which keys, what a refusal or an unsupported
DeleteObjects does, and what reaches the journal."""

from __future__ import annotations

import logging
import threading

import pytest
from botocore.stub import Stubber

from journalsync.deleter import BATCH_KEYS, Deleter, run_deletes
from journalsync.errors import FatalRemoteError, Interrupted
from journalsync.journal import Journal
from journalsync.models import Action, PlanItem, TransferResult
from tests.mutation_support.s3env import ClientFactory, keys, make_config, use_server_env
from tests.support.proxy import Fault, RecordingProxy

pytestmark = pytest.mark.parametrize("s3", ["moto"], indirect=True)


def fault_on(operation, status, code):
    return lambda req: Fault(status=status, code=code) if req.operation == operation else None


@pytest.fixture
def world(s3, bucket, tmp_path, monkeypatch):
    """A bucket with three objects under the prefix and one outside it, and a proxy in
    front of the server whose hook a test may set."""
    use_server_env(monkeypatch, tmp_path, s3)
    client = s3.client()
    for key in ("pre/a", "pre/b", "pre/c", "other/a"):
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    with RecordingProxy(s3.port) as proxy:
        yield proxy, client, bucket, tmp_path


def deleter(world, **kw) -> Deleter:
    proxy, _, bucket, tmp_path = world
    return Deleter(make_config(proxy.endpoint_url, bucket, tmp_path, **kw),
                   ClientFactory(make_config(proxy.endpoint_url, bucket, tmp_path, **kw)))


def items(*names):
    return [PlanItem(i, name, Action.DELETE, "extra") for i, name in enumerate(names, 1)]


def ok(item):
    return TransferResult(item.id, item.key, True, 1, error=None, fatal=False, action=Action.DELETE)


def test_one_batch_request_deletes_only_under_the_prefix(world):
    proxy, client, bucket, _ = world
    batch = items("a", "b")
    assert deleter(world).delete(batch) == [ok(i) for i in batch]
    assert keys(client, bucket) == ["other/a", "pre/c"]
    assert [r.operation for r in proxy.requests] == ["DeleteObjects"]


def test_without_batch_delete_each_key_is_one_request(world):
    proxy, client, bucket, _ = world
    batch = items("a", "c")
    assert deleter(world, provider="gcs").delete(batch) == [ok(i) for i in batch]
    assert keys(client, bucket) == ["other/a", "pre/b"]
    assert [(r.operation, r.path) for r in proxy.requests] == [
        ("DeleteObject", f"/{bucket}/pre/a"), ("DeleteObject", f"/{bucket}/pre/c")]


@pytest.mark.parametrize("status, code", [(405, "Other"), (501, "Other"), (400, "NotImplemented"),
                                          (400, "MethodNotAllowed"), (400, "501"), (400, "405")])
def test_unsupported_batch_delete_falls_back_to_one_key_at_a_time(world, status, code, caplog):
    proxy, client, bucket, _ = world
    proxy.hook = fault_on("DeleteObjects", status, code)
    d = deleter(world)
    caplog.set_level(logging.INFO, logger="journalsync.deleter")
    assert d.delete(items("a", "b")) == [ok(i) for i in items("a", "b")]
    assert d.delete(items("c")) == [ok(items("c")[0])]
    assert keys(client, bucket) == ["other/a"]
    assert [r.operation for r in proxy.requests] == ["DeleteObjects"] + ["DeleteObject"] * 3
    assert [r.getMessage() for r in caplog.records] == [
        "DeleteObjects is not supported here; deleting one key at a time"]


def test_other_batch_errors_are_raised(world):
    proxy, client, bucket, _ = world
    proxy.hook = fault_on("DeleteObjects", 403, "AccessDenied")
    with pytest.raises(Exception) as info:
        deleter(world).delete(items("a"))
    assert info.value.response["Error"]["Code"] == "AccessDenied"
    assert keys(client, bucket) == ["other/a", "pre/a", "pre/b", "pre/c"]


@pytest.mark.parametrize("status, code, error, fatal", [
    (403, "AccessDenied", "access denied (AccessDenied)", True),
    (400, "InvalidRequest", "InvalidRequest: injected by the test proxy", False),
])
def test_one_key_failures_come_back_as_results(world, status, code, error, fatal):
    proxy, client, bucket, _ = world
    proxy.hook = fault_on("DeleteObject", status, code)
    item = items("a")[0]
    assert deleter(world, provider="gcs").delete([item]) == [TransferResult(
        item.id, "a", False, 1, error=error, fatal=fatal, action=Action.DELETE)]


def test_per_key_errors_of_a_batch(world):
    """No local server refuses one key of a DeleteObjects, so here botocore's Stubber
    gives the answer S3 gives (per-key Errors in a 200 response)."""
    d = deleter(world)
    client = d.clients.get()
    with Stubber(client) as stub:
        stub.add_response("delete_objects", {"Errors": [
            {"Key": "pre/a", "Code": "AccessDenied", "Message": "Access Denied"},
            {"Key": "pre/c", "Code": "InternalError"},
            {"Key": "pre/d", "Code": "XAmzContentSHA256Mismatch", "Message": ""}]})
        results = d.delete(items("a", "b", "c", "d"))
    assert [(r.key, r.ok, r.error, r.fatal) for r in results] == [
        ("a", False, "AccessDenied: Access Denied", False), ("b", True, None, False),
        ("c", False, "InternalError", False), ("d", False, "XAmzContentSHA256Mismatch", False)]


@pytest.fixture
def journal(tmp_path):
    with Journal(tmp_path / "j.sqlite") as journal:
        yield journal


def plan_deletes(journal, names) -> int:
    run_id = journal.start_run("src", "dest", None, False)
    journal.add_plan_items(run_id, [{"key": n, "action": "delete", "reason": "extra",
                                     "size": 1, "sha256": None} for n in names])
    journal.add_plan_items(run_id, [{"key": "up", "action": "upload", "reason": "new file",
                                     "size": 1, "sha256": None}])
    return run_id


def test_run_deletes_goes_through_every_batch_and_journals_it(world, journal, caplog):
    proxy, client, bucket, _ = world
    names = ["a", "b", "c"] + [f"z{i:04d}" for i in range(BATCH_KEYS - 2)]  # 1001: 1000 + 1
    run_id = plan_deletes(journal, names)
    caplog.set_level(logging.INFO, logger="journalsync.deleter")
    run_deletes(journal, run_id, deleter(world), threading.Event())
    assert keys(client, bucket) == ["other/a"]
    assert [r.operation for r in proxy.requests] == ["DeleteObjects", "DeleteObjects"]
    assert journal.transfer_totals(run_id)["deleted"] == len(names)
    assert {str(item) for item in journal.iter_plan(run_id)} >= {"delete a (extra)"}
    assert journal.claim_batch(run_id, 0, 10, Action.DELETE) == []
    assert "deleted a (extra)" in [r.getMessage() for r in caplog.records]


def test_run_deletes_stops_at_a_fatal_error_after_journaling_the_batch(world, journal, caplog):
    proxy, client, bucket, _ = world
    proxy.hook = fault_on("DeleteObject", 403, "AccessDenied")
    run_id = plan_deletes(journal, ["a", "b"])
    caplog.set_level(logging.WARNING, logger="journalsync.deleter")
    with pytest.raises(FatalRemoteError, match=r"^stopped deleting: access denied \(AccessDenied\)$"):
        run_deletes(journal, run_id, deleter(world, provider="gcs"), threading.Event())
    assert journal.transfer_totals(run_id)["failed"] == 2
    assert [r.getMessage() for r in caplog.records] == [
        "delete failed: a: access denied (AccessDenied)",
        "delete failed: b: access denied (AccessDenied)"]


def test_run_deletes_keeps_going_past_a_per_key_failure(world, journal):
    proxy, client, bucket, _ = world
    proxy.hook = lambda req: (Fault(status=400, code="InvalidRequest")
                              if req.operation == "DeleteObject" and req.path.endswith("/a") else None)
    run_id = plan_deletes(journal, ["a", "b"])
    run_deletes(journal, run_id, deleter(world, provider="gcs"), threading.Event())
    assert keys(client, bucket) == ["other/a", "pre/a", "pre/c"]
    totals = journal.transfer_totals(run_id)
    assert (totals["deleted"], totals["failed"]) == (1, 1)


def test_run_deletes_stops_before_a_batch_when_asked(world, journal):
    proxy, client, bucket, _ = world
    run_id = plan_deletes(journal, ["a"])
    stop = threading.Event()
    stop.set()
    with pytest.raises(Interrupted, match="^stopped before every delete was done$"):
        run_deletes(journal, run_id, deleter(world), stop)
    assert proxy.requests == [] and journal.transfer_totals(run_id)["pending_deletes"] == 1
