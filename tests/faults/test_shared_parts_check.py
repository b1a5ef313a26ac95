"""The owner's check of a shared upload before its Complete (sharedparts.py): ListParts
against the journal by part number and size (and the part's checksum where the store
gives one), not by ETag; a part the store does not hold as journaled reopens only its
unit, the upload is not aborted. A real run on PostgreSQL, moto behind the recording proxy.

Which store's ListParts gives ETags other than those its UploadPart answered? None of the
three this suite runs: moto, rclone serve s3 and SeaweedFS (weed mini) all answer the
part's MD5, quoted, in both, with Content-MD5 or CRC64-NVME parts alike (probed by hand:
one 5 MiB part each). Stores that do differ exist (opaque part ETags, ETags that change
form between the two answers), so the narrowest honest means is used: the proxy rewrites
the ETags in the ListParts answers of a real moto server, and nothing else; the Complete
goes to moto with the ETags its UploadPart gave."""

from __future__ import annotations

import hashlib
import random
import re
import threading
import uuid

import pytest

from journalsync.config import MiB
from tests.faults.test_shared_parts import _finish, _kill_all, _object_is, _part_puts, _rows
from tests.support.proxy import Fault, RecordingProxy

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("s3", ["moto"], indirect=True),
              pytest.mark.parametrize("journal_kind", ["postgresql"], indirect=True)]

BIG = "big.bin"
PARTS = 6
ARGS = ("--multipart-threshold", "5MiB", "--part-size", "5MiB", "--part-unit", "10MiB",
        "--lease", "3s", "--workers", "2", "--large-files", "prehash")


def _opaque(match: re.Match) -> bytes:
    """A part's ETag as a store with opaque part ETags gives it: not the MD5."""
    return b"<ETag>&quot;" + hashlib.sha1(match.group(1)).hexdigest().encode() + b"&quot;</ETag>"


ETAG = re.compile(rb"<ETag>(?:&quot;|\")?([0-9a-fA-F]{32})(?:&quot;|\")?</ETag>")


def _run_alone(sync, url: str, job: str, hook):
    data = random.Random(41).randbytes(PARTS * 5 * MiB - 7)
    sync.write(BIG, data)
    procs: list = []
    with RecordingProxy(sync.s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        try:
            run = sync.start("run", str(sync.src), sync.dest, "--journal", url, "--job", job,
                             *ARGS)
            procs.append(run)
            result = _finish(run)
        finally:
            _kill_all(procs)
    return data, proxy, result


def test_list_parts_etags_other_than_the_journaled_ones_do_not_abort(sync, s3, pg_url):
    job = f"shared_etags_{uuid.uuid4().hex[:8]}"

    def hook(req):
        if req.operation == "ListParts":
            return Fault(status=0, rewrite=lambda body: ETAG.sub(_opaque, body))
        return None

    data, proxy, (code, out, err) = _run_alone(sync, pg_url, job, hook)
    assert code == 0, (out, err[-3000:])
    assert _rows(pg_url, job, "SELECT count(*) FROM part_units") == [(3,)]  # it was shared
    _object_is(sync, BIG, data)
    ops = proxy.operations()
    assert ops["ListParts"] >= 1 and ops["CompleteMultipartUpload"] == 1, ops
    assert ops["AbortMultipartUpload"] == 0, ops
    assert _part_puts(proxy) == {n: 1 for n in range(1, PARTS + 1)}


def test_a_part_the_store_holds_otherwise_reopens_only_its_unit(sync, s3, pg_url):
    """The first ListParts says part 4 is a byte short (as a store that lost or cut it
    would): only part 4's unit is reopened and its parts not held as journaled are sent
    again (part 4 alone); the next check passes and the upload completes."""
    job = f"shared_reopen_{uuid.uuid4().hex[:8]}"
    first = threading.Event()

    def short_part_4(body: bytes) -> bytes:
        return re.sub(rb"(<PartNumber>4</PartNumber>.*?<Size>)(\d+)(</Size>)",
                      lambda m: m.group(1) + str(int(m.group(2)) - 1).encode() + m.group(3),
                      body, flags=re.S)

    def hook(req):
        if req.operation == "ListParts" and not first.is_set():
            first.set()
            return Fault(status=0, rewrite=short_part_4)
        return None

    data, proxy, (code, out, err) = _run_alone(sync, pg_url, job, hook)
    assert code == 0, (out, err[-3000:])
    _object_is(sync, BIG, data)
    ops = proxy.operations()
    assert ops["ListParts"] == 2 and ops["CompleteMultipartUpload"] == 1, ops
    assert ops["AbortMultipartUpload"] == 0 and ops["CreateMultipartUpload"] == 1, ops
    assert _part_puts(proxy) == {**{n: 1 for n in range(1, PARTS + 1)}, 4: 2}
    epochs = dict(_rows(pg_url, job, "SELECT first_part, epoch FROM part_units"))
    assert epochs == {1: 1, 3: 2, 5: 1}, epochs  # unit 3-4 claimed twice, the others once
