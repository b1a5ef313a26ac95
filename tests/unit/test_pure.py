"""Pure functions, tested with tables of cases."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from journalsync.config import Destination, MiB, parse_size
from journalsync.errors import UsageError
from journalsync.models import Action, LocalFile, RemoteObject
from journalsync.plan import decide
from journalsync.retry import fatal_reason, is_retryable
from journalsync.scan import key_for
from journalsync.multipart import part_size_for
from journalsync.objectmeta import content_type, metadata_sha256, mtime_text

H1, H2 = "1" * 64, "2" * 64


def local(size=10, sha=H1):
    return LocalFile("k", "k", size, 1, 1, 1, sha)


def remote(size=10, sha=H1):
    return RemoteObject("k", size, "etag", sha)


@pytest.mark.parametrize("lf, ro, action, reason", [
    (local(), None, Action.UPLOAD, "new file"),
    (local(size=10), remote(size=11), Action.UPLOAD, "size differs: local 10, remote 11"),
    (local(), remote(sha=None), Action.UPLOAD, "remote hash unknown: no sha256 metadata"),
    (local(sha=None), remote(), Action.UPLOAD, "local hash unknown"),
    (local(sha=H1), remote(sha=H2), Action.UPLOAD, "content differs: sha256 mismatch"),
    (local(sha=H1), remote(sha=H1), Action.SKIP, "unchanged: size and sha256 match"),
    (None, remote(), Action.SKIP, "extra: no local file, kept"),
])
def test_decide(lf, ro, action, reason):
    decision = decide(lf, ro, None)
    assert (decision.action, decision.reason) == (action, reason)


def test_decide_needs_one_side():
    with pytest.raises(ValueError):
        decide(None, None)


@pytest.mark.parametrize("text, expected", [
    ("8MiB", 8 * MiB), ("64MB", 64_000_000), ("1024", 1024), ("1.5GiB", 1536 * MiB),
    ("5 mib", 5 * MiB), ("10k", 10_000), ("2KiB", 2048),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MiB", "8XB", "-1", "1e9"])
def test_parse_size_rejects(text):
    with pytest.raises(UsageError):
        parse_size(text)


@pytest.mark.parametrize("text, bucket, prefix, list_prefix", [
    ("s3://b1b/backup/host1", "b1b", "backup/host1", "backup/host1/"),
    ("s3://b1b/backup/host1/", "b1b", "backup/host1", "backup/host1/"),
    ("s3://b1b", "b1b", "", ""),
    ("s3://b1b/", "b1b", "", ""),
])
def test_destination(text, bucket, prefix, list_prefix):
    dest = Destination.parse(text)
    assert (dest.bucket, dest.prefix, dest.list_prefix) == (bucket, prefix, list_prefix)
    assert dest.object_key("a/b") == list_prefix + "a/b"


@pytest.mark.parametrize("text", ["b1b/x", "s3://", "s3:///x", "s3://b1b/a//b", "s3://b1b/../x",
                                  "s3://b/x", "s3://bad bucket/x"])
def test_destination_rejects(text):
    with pytest.raises(UsageError):
        Destination.parse(text)


def test_key_for_normalises_and_limits():
    dest = Destination.parse("s3://bkt/pre")
    assert key_for("cafe\u0301.txt", dest) == ("caf\u00e9.txt", None)  # NFD -> NFC
    key, reason = key_for("bad-\udcff.txt", dest)  # undecodable byte via surrogateescape
    assert key is None and "not valid UTF-8" in reason
    key, reason = key_for("x" * 1021, dest)  # "pre/" + 1021 = 1025 bytes
    assert key is None and "1025 bytes" in reason
    assert key_for("x" * 1020, dest) == ("x" * 1020, None)
    key, reason = key_for("\u00e9" * 511, dest)  # 2 bytes each: 4 + 1022 = 1026
    assert key is None and "1026 bytes" in reason


@pytest.mark.parametrize("name, ctype", [
    ("a.html", "text/html"), ("a.JSON", "application/json"), ("a", "application/octet-stream"),
    ("a.tar.gz", "application/gzip"), ("a.css", "text/css"), ("a.unknownext", "application/octet-stream"),
])
def test_content_type(name, ctype):
    assert content_type(name) == ctype


@pytest.mark.parametrize("size, requested, expected", [
    (100 * MiB, 8 * MiB, 8 * MiB),
    (10_000 * 8 * MiB, 8 * MiB, 8 * MiB),
    (10_000 * 8 * MiB + 1, 8 * MiB, 9 * MiB),
    (1024**4, 8 * MiB, 105 * MiB),  # 1 TiB: ceil(1 TiB / 10,000) rounded up to a MiB
])
def test_part_size_for(size, requested, expected):
    part = part_size_for(size, requested)
    assert part == expected and -(-size // part) <= 10_000


def test_metadata_sha256_is_case_insensitive_and_validated():
    assert metadata_sha256({"Sha256": H1}) == H1
    assert metadata_sha256({"SHA256": H1.upper()}) == H1
    assert metadata_sha256({"sha256": "not-a-hash"}) is None
    assert metadata_sha256({}) is None


def test_mtime_text():
    assert mtime_text(1_700_000_000_123_456_789) == "1700000000.123456789"
    assert mtime_text(5) == "0.000000005"


def _client_error(code, status=400):
    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


@pytest.mark.parametrize("exc, retryable, fatal", [
    (_client_error("SlowDown", 503), True, False),
    (_client_error("InternalError", 500), True, False),
    (_client_error("RequestTimeout", 400), True, False),
    (_client_error("Whatever", 502), True, False),
    (EndpointConnectionError(endpoint_url="http://x"), True, False),
    (_client_error("AccessDenied", 403), False, True),
    (_client_error("InvalidAccessKeyId", 403), False, True),
    (_client_error("SignatureDoesNotMatch", 403), False, True),
    (_client_error("NoSuchBucket", 404), False, True),
    (_client_error("RequestTimeTooSkewed", 403), False, True),
    (NoCredentialsError(), False, True),
    (_client_error("NoSuchKey", 404), False, False),
])
def test_error_classification(exc, retryable, fatal):
    assert is_retryable(exc) is retryable
    assert (fatal_reason(exc) is not None) is fatal


def test_sql_unchanged_condition_is_decides_skip_case():
    """plan.build_plan counts unchanged files in SQL (journal UNCHANGED); for every mix of
    sizes and known/unknown/equal/different hashes, SQL and decide() must agree."""
    import itertools
    import sqlite3

    from journalsync.journal.plans import UNCHANGED
    from journalsync.models import Action, LocalFile, RemoteObject
    from journalsync.plan import decide

    a, b = "a" * 64, "b" * 64
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE files (key TEXT PRIMARY KEY, size INT, sha256 TEXT)")
    db.execute("CREATE TABLE remote_objects (key TEXT PRIMARY KEY, size INT, sha256 TEXT)")
    cases = list(itertools.product((1, 2), (None, a, b), (None, 1, 2), (None, a, b)))
    for i, (lsize, lsha, rsize, rsha) in enumerate(cases):
        db.execute("INSERT INTO files VALUES (?, ?, ?)", (str(i), lsize, lsha))
        if rsize is not None:
            db.execute("INSERT INTO remote_objects VALUES (?, ?, ?)", (str(i), rsize, rsha))
    sql = dict(db.execute(f"SELECT f.key, {UNCHANGED} FROM files f "
                          "LEFT JOIN remote_objects r ON r.key = f.key"))
    for i, (lsize, lsha, rsize, rsha) in enumerate(cases):
        remote = RemoteObject("k", rsize, "e", rsha) if rsize is not None else None
        skip = decide(LocalFile("k", "k", lsize, 0, 0, 0, lsha), remote).action is Action.SKIP
        assert sql[str(i)] == int(skip), (lsize, lsha, rsize, rsha)
