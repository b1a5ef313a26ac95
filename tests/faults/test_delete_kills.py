"""Delete safety under random kills (issue 11): a run is SIGKILLed at a random point of its
delete phase, some of the files it meant to delete come back, and `run --resume --delete`
follows. Across 20 trials not one object whose local file exists may be deleted.

Deletes go one key at a time here (`--provider gcs`), so the kill lands between any two
deletes: at a delete held by the proxy (the request never reached the store), or after a
random pause once the deletes have begun (wherever the run happens to be).
"""

from __future__ import annotations

import json
import random
import signal
import time

import pytest

from tests.support.proxy import Fault, RecordingProxy

pytestmark = pytest.mark.slow

TRIALS = 20
ARGS = ("--delete", "--provider", "gcs")


def keys(client, bucket) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", ())}


def deletes(proxy) -> int:
    return sum(1 for r in proxy.requests if r.operation.startswith("Delete"))


def kill_during_deletes(sync, proxy, rng, planned: int) -> str:
    """Start a --delete run and SIGKILL it somewhere in its delete phase; says where.

    Either a random delete is held (and later dropped, never reaching the store), or each
    delete is slowed a little and the kill falls after a random pause: then it can land
    anywhere, a delete the store has done but the journal has not recorded included."""
    hold_at = rng.randint(1, planned)
    held = rng.random() < 0.5
    seen = deletes(proxy)

    def hook(req):
        if not req.operation.startswith("Delete"):
            return None
        if not held:
            return Fault(status=0, delay=0.05)
        return Fault(status=0, delay=60, reset=True) if deletes(proxy) - seen >= hold_at else None

    proxy.hook = hook
    proc = sync.start(*sync.run_args(*ARGS))
    deadline = time.monotonic() + 60
    while deletes(proxy) - seen < (hold_at if held else 1) and proc.poll() is None:
        assert time.monotonic() < deadline, "the delete phase never began"
        time.sleep(0.01)
    if not held:
        time.sleep(rng.uniform(0, 0.05 * planned))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proxy.hook = None
    return f"held at delete {hold_at} of {planned}" if held else "after a random pause"


def test_random_kills_in_the_delete_phase_never_delete_a_present_file(sync, s3, s3client):
    if s3.name != "rclone":
        pytest.skip("20 trials run on rclone serve s3 only, to keep the suite short; "
                    "tests/integration/test_trust.py covers the same path on every server")
    rng = random.Random(20261126)
    files = {f"d{i % 5}/f{i:03d}.txt": f"file {i}".encode() for i in range(200)}
    for rel, data in files.items():
        sync.write(rel, data)
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        assert sync.run().code == 0
        resumed_with_deletes = 0
        # On PostgreSQL 8 trials: the kill points are the same code, only the journal's SQL
        # differs, and 20 more would add a minute to the suite (59 s for 20 at light load).
        trials = 8 if sync.pg_url else TRIALS
        for trial in range(trials):
            gone = rng.sample(sorted(files), rng.randint(3, 15))  # within the 10% cap
            for rel in gone:
                (sync.src / rel).unlink()
            where = kill_during_deletes(sync, proxy, rng, len(gone))
            back = rng.sample(gone, rng.randint(0, len(gone)))
            for rel in back:
                sync.write(rel, files[rel])
            before = keys(s3client, sync.bucket)
            resumed = sync.run("--resume", *ARGS, "--json")
            after = keys(s3client, sync.bucket)
            assert resumed.code == 0, (trial, where, resumed.err)
            present = {sync.object_key(rel) for rel in files if (sync.src / rel).exists()}
            wrongly = (before - after) & present
            assert not wrongly, f"trial {trial} ({where}): deleted {sorted(wrongly)}"
            assert (before & present) <= after
            # and what the resumed run's fresh look found missing, it uploaded
            assert present <= after, f"trial {trial} ({where}): missing {sorted(present - after)}"
            resumed_with_deletes += json.loads(resumed.out)["resumed"]
            for rel in gone:  # the next trial starts from a full tree and bucket
                sync.write(rel, files[rel])
            assert sync.run().code == 0
            assert keys(s3client, sync.bucket) == {sync.object_key(rel) for rel in files}
    assert resumed_with_deletes >= trials // 2, "most trials must really resume a plan"
