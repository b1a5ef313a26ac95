"""adopt.py: ETag parsing, candidate part sizes, and the proofs, on synthetic data. The
multipart ETags expected here are computed the plain way (slice, md5 each part, md5 the
concatenation), independently of adopt.py's streaming hashers."""

from __future__ import annotations

import base64
import hashlib
import math
import random

import pytest

from journalsync import adopt
from journalsync.adopt import MiB, candidate_part_sizes, parse_etag, prove_by_etag

GiB = 1024 * MiB


def multipart_etag(data: bytes, part_size: int) -> str:
    parts = [data[i:i + part_size] for i in range(0, len(data), part_size)] or [b""]
    return hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"


def digests_of(data: bytes, etag: str | None, chunk: int = 1_000_003) -> adopt.Digests:
    """Fed in odd-sized chunks, so part boundaries fall inside buffers."""
    hasher = adopt.ContentHasher(len(data), etag)
    for i in range(0, len(data), chunk):
        hasher.update(data[i:i + chunk])
    return hasher.digests()


@pytest.mark.parametrize("etag, parsed", [
    ('"0123456789abcdef0123456789ABCDEF"', ("0123456789abcdef0123456789abcdef", None)),
    ("0123456789abcdef0123456789abcdef-12", ("0123456789abcdef0123456789abcdef", 12)),
    ('"0123456789abcdef0123456789abcdef-1"', ("0123456789abcdef0123456789abcdef", 1)),
    ("0123456789abcdef0123456789abcdef-0", None),  # no upload has zero parts
    ("0123456789abcdef0123456789abcdef-10001", None),  # over S3's part limit
    ("0123456789abcdef0123456789abcde", None),  # 31 hex
    ("0123456789abcdef0123456789abcdefa", None),  # 33 hex
    ("g123456789abcdef0123456789abcdef", None),
    ('W/"0123456789abcdef0123456789abcdef"', None),
    ("", None), (None, None),
])
def test_parse_etag(etag, parsed):
    assert parse_etag(etag) == parsed


@pytest.mark.parametrize("size, parts, first", [
    (12 * MiB + 7, 3, 5 * MiB),  # rclone's default
    (20 * MiB + 5, 3, 8 * MiB),  # aws cli / boto3
    (31 * MiB + 3, 3, 15 * MiB),  # s3cmd
    (50 * MiB + 1, 2, 50 * MiB),  # s5cmd
    (200 * GiB, 6400, 32 * MiB),  # s3transfer doubles 8 MiB until <= 10,000 parts
    (60 * GiB, 8778, 7 * MiB),  # rclone: size / 10,000 rounded up to a whole MiB
    (600 * GiB, 10_000, 600 * GiB // 10_000 + 1),  # s5cmd (s3manager): size // 10,000 + 1
])
def test_peer_part_sizes_come_first(size, parts, first):
    assert math.ceil(size / first) == parts
    assert candidate_part_sizes(size, parts)[0] == first


def test_candidates_give_exactly_n_parts_in_order_without_duplicates():
    size = 20 * MiB
    # 8 MiB (aws) gives 3 parts; then whole MiB counts between 20/3 and 20/2 MiB.
    assert candidate_part_sizes(size, 3) == [8 * MiB, 7 * MiB, 9 * MiB]
    assert candidate_part_sizes(size, 4) == [5 * MiB, 6 * MiB]
    for parts in range(1, 30):
        found = candidate_part_sizes(size, parts)
        assert all(math.ceil(size / ps) == parts for ps in found)
        assert len(found) == len(set(found))


def test_candidates_are_capped():
    found = candidate_part_sizes(1000 * MiB, 2)  # any part size in [500 MiB, 1000 MiB)
    assert len(found) == adopt.MAX_CANDIDATES == 16
    assert found[:2] == [512 * MiB, 500 * MiB]  # a power of two, then whole MiB ascending
    assert candidate_part_sizes(1000 * MiB, 2, cap=3) == found[:3]


def test_one_part_is_one_candidate():
    assert candidate_part_sizes(3 * MiB, 1) == [5 * MiB]
    assert candidate_part_sizes(0, 1) == []


def test_part_label():
    assert (adopt.part_label(8 * MiB), adopt.part_label(5_300_000)) == ("8MiB", "5300000")


@pytest.fixture(scope="module")
def data() -> bytes:
    return random.Random(13).randbytes(50 * MiB + 1)


def test_single_part_etag_proves_and_a_different_body_does_not(data):
    body = data[:300_001]
    etag = hashlib.md5(body).hexdigest()
    found = digests_of(body, etag)
    assert found.sha256 == hashlib.sha256(body).hexdigest()
    assert prove_by_etag(f'"{etag}"', found) == "etag-md5"
    same_size = bytes([body[0] ^ 1]) + body[1:]
    assert prove_by_etag(etag, digests_of(same_size, etag)) is None


@pytest.mark.parametrize("size, part_size", [
    (12 * MiB + 7, 5 * MiB), (20 * MiB + 5, 8 * MiB), (31 * MiB + 3, 15 * MiB),
    (50 * MiB + 1, 50 * MiB), (16 * MiB, 8 * MiB),  # a size that is a whole number of parts
    (13 * MiB + 999, 6 * MiB),  # no peer's default: found among whole MiB counts
])
def test_multipart_etag_proves_with_its_part_size(data, size, part_size):
    body = data[:size]
    etag = multipart_etag(body, part_size)
    assert prove_by_etag(etag, digests_of(body, etag)) == f"multipart-etag:{part_size // MiB}MiB"


def test_a_corrupted_middle_part_proves_nothing(data):
    body = data[:20 * MiB + 5]
    etag = multipart_etag(body, 8 * MiB)
    middle = 8 * MiB + 4 * MiB
    damaged = body[:middle] + bytes([body[middle] ^ 0x40]) + body[middle + 1:]
    assert prove_by_etag(etag, digests_of(damaged, etag)) is None


def test_equal_size_other_content_proves_nothing(data):
    body = data[:12 * MiB + 7]
    etag = multipart_etag(body, 5 * MiB)
    other = random.Random(1).randbytes(len(body))
    assert prove_by_etag(etag, digests_of(other, etag)) is None


def test_a_part_size_no_rule_tries_proves_nothing(data):
    """5,300,000-byte parts: not a whole MiB, not a peer's choice. Rule 3 or upload."""
    body = data[:12 * MiB]
    etag = multipart_etag(body, 5_300_000)
    assert prove_by_etag(etag, digests_of(body, etag)) is None


def test_a_multipart_etag_is_never_compared_with_the_whole_md5(data):
    body = data[:1000]
    etag = hashlib.md5(body).hexdigest() + "-1"  # md5 of the body, but claimed multipart
    assert prove_by_etag(etag, digests_of(body, etag)) is None
    assert prove_by_etag(multipart_etag(body, 5 * MiB), digests_of(body, etag)) \
        == "multipart-etag:5MiB"


def test_an_sse_kms_style_etag_proves_nothing(data):
    body = data[:1000]
    assert prove_by_etag("f" * 32, digests_of(body, "f" * 32)) is None
    assert prove_by_etag("not-an-md5", digests_of(body, "not-an-md5")) is None


MD5 = hashlib.md5(b"hello").hexdigest()


@pytest.mark.parametrize("metadata, parsed", [
    ({"md5chksum": base64.b64encode(hashlib.md5(b"hello").digest()).decode()}, MD5),
    ({"Md5chksum": base64.b64encode(hashlib.md5(b"hello").digest()).decode()}, MD5),
    ({"md5chksum": "not base64!"}, None),
    ({"md5chksum": base64.b64encode(b"short").decode()}, None),
    ({}, None), (None, None),
])
def test_rclone_md5chksum(metadata, parsed):
    assert adopt.rclone_md5(metadata) == parsed


@pytest.mark.parametrize("metadata, parsed", [
    ({"s3cmd-attrs": f"atime:1700000000/ctime:1700000000/gid:1000/md5:{MD5}/mode:33188"}, MD5),
    ({"S3cmd-Attrs": f"md5:{MD5.upper()}/uid:0"}, MD5),
    ({"s3cmd-attrs": "uid:0/gid:0"}, None),
    ({"s3cmd-attrs": "md5:xyz"}, None),
])
def test_s3cmd_attrs(metadata, parsed):
    assert adopt.s3cmd_md5(metadata) == parsed


def test_metadata_proofs_and_mismatches():
    rclone = {"md5chksum": base64.b64encode(hashlib.md5(b"hello").digest()).decode()}
    s3cmd = {"s3cmd-attrs": f"md5:{MD5}"}
    other = hashlib.md5(b"HELLO").hexdigest()
    assert adopt.prove_by_metadata(rclone, MD5) == "rclone-md5"
    assert adopt.prove_by_metadata(s3cmd, MD5) == "s3cmd-md5"
    assert adopt.prove_by_metadata(rclone, other) is None
    assert adopt.prove_by_metadata(rclone, None) is None  # the file's MD5 is not known
    # Two claims that disagree: no proof, whichever matches.
    assert adopt.prove_by_metadata({**rclone, "s3cmd-attrs": f"md5:{other}"}, MD5) is None
    assert adopt.prove_by_metadata({"mtime": "1"}, MD5) is None


def test_adoption_proof_names():
    assert all(adopt.is_adoption_proof(p) for p in (
        "etag-md5", "multipart-etag:8MiB", "rclone-md5", "s3cmd-md5"))
    assert not any(adopt.is_adoption_proof(p) for p in ("upload", "head", None, ""))
