"""The ListObjectsV2 parser of the awscrt path (crt.py): the fields botocore would give."""

from datetime import datetime, timezone

import pytest

from botocore.exceptions import ClientError

from journalsync.config import MiB
from journalsync.crt import Deadline, PartDeadline, answered_by_name, client_error, parse_list_page
from journalsync.retry import fatal_reason, is_retryable, is_throttle

AWS_PAGE = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name><Prefix>p%2F</Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys>
  <EncodingType>url</EncodingType>
  <IsTruncated>true</IsTruncated>
  <Contents>
    <Key>p/a+b%2Bc%20d.txt</Key>
    <LastModified>2026-11-25T01:02:03.000Z</LastModified>
    <ETag>&quot;0cc175b9c0f1b6a831c399e269772661&quot;</ETag>
    <Size>1</Size><StorageClass>STANDARD</StorageClass>
    <Owner><ID>abc</ID><DisplayName>me</DisplayName></Owner>
  </Contents>
  <Contents>
    <Size>0</Size><Key>p/%E2%82%AC%26%3C.bin</Key><ETag>"d41d8cd98f00b204e9800998ecf8427e-2"</ETag>
    <LastModified>2026-11-25T01:02:04Z</LastModified>
  </Contents>
  <Contents><Key>p/</Key><LastModified>2026-11-25T01:02:05.5Z</LastModified><ETag></ETag><Size>0</Size></Contents>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
</ListBucketResult>"""


def test_page_fields_decoded_like_botocore():
    rows, prefixes, token = parse_list_page(AWS_PAGE)
    ts = datetime(2026, 11, 25, 1, 2, 3, tzinfo=timezone.utc).timestamp()
    assert rows == [
        ("p/a b+c d.txt", 1, "0cc175b9c0f1b6a831c399e269772661", ts),
        ("p/\u20ac&<.bin", 0, "d41d8cd98f00b204e9800998ecf8427e-2", ts + 1),
        ("p/", 0, "", ts + 2.5),
    ]
    assert token == "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="


def test_keys_not_url_decoded_when_the_server_did_not_encode_them():
    body = (b"<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a+b%41&amp;.txt</Key>"
            b"<LastModified>2026-11-25T01:02:03Z</LastModified><ETag>e</ETag><Size>7</Size></Contents>"
            b"<NextContinuationToken>ignored</NextContinuationToken></ListBucketResult>")
    rows, _, token = parse_list_page(body)
    assert [r[0] for r in rows] == ["a+b%41&.txt"]
    assert token is None  # not truncated: the last page, whatever else it says


def test_empty_listing():
    assert parse_list_page(b"<ListBucketResult><KeyCount>0</KeyCount><IsTruncated>false"
                           b"</IsTruncated></ListBucketResult>") == ([], [], None)


def test_common_prefixes_decoded():
    body = (b"<ListBucketResult><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>"
            b"<CommonPrefixes><Prefix>p/d%20one/</Prefix></CommonPrefixes>"
            b"<CommonPrefixes>\n <Prefix>p/%26x/</Prefix>\n</CommonPrefixes></ListBucketResult>")
    assert parse_list_page(body).prefixes == ["p/d one/", "p/&x/"]


def test_error_responses_classified_like_botocore_errors():
    slow = client_error(503, [("x-amz-request-id", "1")],
                        b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>",
                        "PutObject")
    assert isinstance(slow, ClientError) and is_retryable(slow) and is_throttle(slow)
    skew = client_error(403, [], b"<Error><Code>RequestTimeTooSkewed</Code><Message>m</Message>"
                                 b"<ServerTime>2026-11-25T00:00:00Z</ServerTime></Error>", "PutObject")
    assert "2026-11-25T00:00:00Z" in fatal_reason(skew) and not is_retryable(skew)
    bare = client_error(502, [], None, "PutObject")  # a proxy's empty 502
    assert is_retryable(bare) and bare.response["Error"]["Code"] == "502"
    garbage = client_error(500, [], b"<html>oops", "PutObject")
    assert is_retryable(garbage) and "oops" in garbage.response["Error"]["Message"]


def test_errors_the_crt_names_without_a_response_are_answers_not_dropped_connections():
    """With its retries off, the CRT reports these only by name (checked against rclone
    serve s3 through the fault proxy): a 503 must count as throttling, a skewed clock must
    be fatal, and none may pass for a dropped connection."""
    slow = answered_by_name("AWS_ERROR_S3_SLOW_DOWN", "Response code indicates throttling", "PutObject")
    assert is_throttle(slow) and is_retryable(slow)
    internal = answered_by_name("AWS_ERROR_S3_INTERNAL_ERROR", "internal", "UploadPart")
    assert is_retryable(internal) and not is_throttle(internal)
    skewed = answered_by_name("AWS_ERROR_S3_REQUEST_TIME_TOO_SKEWED", "skewed", "PutObject")
    assert "RequestTimeTooSkewed" in fatal_reason(skewed)
    timeout = answered_by_name("AWS_ERROR_S3_REQUEST_TIMEOUT", "timeout", "PutObject")
    assert is_retryable(timeout) and fatal_reason(timeout) is None


def test_a_small_put_deadline_follows_the_answers_and_backs_off_when_it_runs_out():
    """None before any answer (the caller's long timeout); then 8x the smoothed duration,
    never under 3 s, plus the body's time at 64 KiB/s; doubled when one runs out."""
    deadline = Deadline()
    assert deadline.seconds(0) is None
    deadline.observe(0.02)
    assert deadline.seconds(0) == 3.0 and deadline.seconds(65536) == 4.0
    for _ in range(40):
        deadline.observe(1.0)  # a store that takes a second per small PUT
    assert 7.5 < deadline.seconds(0) <= 8.0
    deadline.expired()
    deadline.expired()
    assert 30 < deadline.seconds(0) <= 32.0


def test_a_part_deadline_scales_with_the_size_and_the_time_parts_took_per_mib():
    """None until a part of at least a MiB has been answered (the caller's long timeout);
    then 4x the smoothed time per MiB times the part's size, never under 5 s; doubled when
    one runs out. A tiny last part's time (its latency) is not taken as the link's rate."""
    deadline = PartDeadline()
    deadline.observe_part(1000, 0.5)
    assert deadline.part_seconds(8 * MiB) is None
    deadline.observe_part(8 * MiB, 0.8)  # 0.1 s per MiB
    assert deadline.part_seconds(MiB) == 5.0
    assert deadline.part_seconds(64 * MiB) == pytest.approx(4 * 0.1 * 64)
    deadline.expired()
    assert deadline.part_seconds(64 * MiB) == pytest.approx(2 * 4 * 0.1 * 64)
