"""A PUT the store took but whose answer the journal never recorded (issue 14's wasted bytes).

The proxy forwards the Nth PutObject and holds its answer; once the store has the object the
run is SIGKILLed, so its plan row is still pending. The next run (`--resume`, or a plain run)
must not send that file again while the store's object has its size and our sha256 metadata
equal to the file's hash as it is now; a file changed since the kill is sent again."""

from __future__ import annotations

import hashlib
import random
import signal
import time

import pytest

from tests.support.proxy import Fault, RecordingProxy

pytestmark = pytest.mark.slow

HELD = 3  # the PutObject whose answer never comes
NAMES = [f"f{i}.bin" for i in range(6)]


def _stored(s3client, sync) -> dict[str, bytes]:
    """Every object under the prefix with its bytes, by file name."""
    listed = s3client.list_objects_v2(Bucket=sync.bucket, Prefix=sync.prefix + "/")
    return {o["Key"][len(sync.prefix) + 1:]:
            s3client.get_object(Bucket=sync.bucket, Key=o["Key"])["Body"].read()
            for o in listed.get("Contents", [])}


def _kill_with_answer_held(sync, s3, s3client) -> dict[str, bytes]:
    """Run until the store holds the HELD-th PUT's object (its answer held at the proxy),
    SIGKILL the run, and return what the store holds then."""
    puts = []

    def hold_one(req):
        if req.operation != "PutObject":
            return None
        puts.append(req.path)
        return Fault(status=0, hold=60) if len(puts) == HELD else None

    with RecordingProxy(s3.port, hook=hold_one) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        proc = sync.start(*sync.run_args("--workers", "1"))
        deadline = time.monotonic() + 60
        while len(_stored(s3client, sync)) < HELD:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the held PUT never reached the store"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return _stored(s3client, sync)


def _put_keys(proxy) -> list[str]:
    return [r.path.rsplit("/", 1)[-1] for r in proxy.requests if r.operation == "PutObject"]


@pytest.mark.parametrize("again", [("--resume",), ()], ids=["resume", "plain"])
def test_an_object_the_store_took_is_not_sent_again(sync, s3, s3client, again):
    rnd = random.Random(41)
    files = {name: rnd.randbytes(64 * 1024 + i) for i, name in enumerate(NAMES)}
    for name, data in files.items():
        sync.write(name, data)
    held = _kill_with_answer_held(sync, s3, s3client)
    held_name = NAMES[HELD - 1]
    assert held_name in held
    rows = sync.journal_rows("SELECT status FROM plan_items WHERE key = ?", held_name)
    assert rows == [("pending",)]  # the journal never heard of that PUT

    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*again)
        assert result.code == 0, result.err
        sent = _put_keys(proxy)
        # Recorded as the upload it was: the next run finds every file unchanged.
        proxy.clear()
        after = sync.run()
    assert after.code == 0 and after.summary["uploaded"] == "0", after.out
    assert proxy.operations()["PutObject"] == 0
    assert not set(sent) & set(held), f"sent again: {sorted(set(sent) & set(held))}"
    assert sorted(sent) == sorted(set(NAMES) - set(held))
    assert _stored(s3client, sync) == files
    head = s3client.head_object(Bucket=sync.bucket, Key=sync.object_key(held_name))
    assert {k.lower(): v for k, v in head["Metadata"].items()}["sha256"] == \
        hashlib.sha256(files[held_name]).hexdigest()


@pytest.mark.parametrize("again", [("--resume",), ()], ids=["resume", "plain"])
def test_a_file_changed_after_the_kill_is_sent_again(sync, s3, s3client, again):
    rnd = random.Random(42)
    files = {name: rnd.randbytes(64 * 1024 + i) for i, name in enumerate(NAMES)}
    for name, data in files.items():
        sync.write(name, data)
    held = _kill_with_answer_held(sync, s3, s3client)
    held_name = NAMES[HELD - 1]
    # Same size, other bytes: only the hash tells them apart.
    files[held_name] = bytes(b ^ 0xFF for b in files[held_name])
    (sync.src / held_name).write_bytes(files[held_name])

    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*again)
    assert result.code == 0, result.err
    sent = _put_keys(proxy)
    assert held_name in sent
    assert sorted(sent) == sorted((set(NAMES) - set(held)) | {held_name})
    assert _stored(s3client, sync) == files
