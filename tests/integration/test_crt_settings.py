"""The awscrt path takes botocore's connection settings: the CA bundle (AWS_CA_BUNDLE or a
profile's ca_bundle), the region botocore was redirected to, and proxies (by stepping aside).
A certificate nobody trusts ends the run at once with exit 6 and one line.

TLS runs against `rclone serve s3` over HTTPS with a certificate from a private CA made here
(trustme); the region and proxy cases run against every server."""

from __future__ import annotations

import re
import uuid

import pytest
import trustme
from botocore.credentials import Credentials

from journalsync.crt import CrtConnectionError, CrtS3
from journalsync.devtools.localserver import RcloneTlsS3Server
from journalsync.errors import ConfigError
from journalsync.retry import Attempts, RetryPolicy, fatal_class, fatal_reason
from tests.conftest import Sync
from tests.support.proxy import Fault, RecordingProxy
from tests.support.tcprelay import CountingRelay

FILES = {f"dir{i % 2}/f{i}.txt": f"small file {i}\n".encode() * (i + 1) for i in range(6)}
FAST = ("--retry-timeout", "20s", "-v")  # before the fix, a CRT TLS failure retried this long


@pytest.fixture(scope="module")
def tls_s3(tmp_path_factory):
    root = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    cert.private_key_pem.write_to_path(str(root / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    with RcloneTlsS3Server(root / "data", root / "cert.pem", root / "key.pem", root / "ca.pem",
                           log_file=root / "rclone.log") as server:
        yield server


@pytest.fixture
def tls_sync(tls_s3, tmp_path) -> Sync:
    bucket = f"jst-{uuid.uuid4().hex[:16]}"
    tls_s3.create_bucket(bucket)
    sync = Sync(tls_s3, bucket, tmp_path)
    for rel, data in FILES.items():
        sync.write(rel, data)
    return sync


def stored(server, bucket: str, prefix: str) -> dict[str, bytes]:
    client = server.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k[len(prefix) + 1:]: client.get_object(Bucket=bucket, Key=k)["Body"].read()
            for k in keys}


def assert_synced_twice(sync: Sync) -> str:
    """A first run uploads everything (CRT PUTs), a second lists (CRT LIST) and skips all."""
    first = sync.run(*FAST)
    assert first.code == 0, first.err
    assert "awscrt path on" in first.err
    assert stored(sync.s3, sync.bucket, sync.prefix) == FILES
    second = sync.run(*FAST)
    assert second.code == 0, second.err
    assert second.summary["uploaded"] == "0" and second.summary["skipped"] == str(len(FILES))
    return first.err


def test_ca_bundle_from_environment_reaches_the_crt(tls_sync, tls_s3):
    tls_sync.env_overrides["AWS_CA_BUNDLE"] = str(tls_s3.ca_file)
    err = assert_synced_twice(tls_sync)
    assert f"trusting {tls_s3.ca_file}" in err


def test_ca_bundle_from_a_profile_reaches_the_crt(tls_sync, tls_s3, tmp_path):
    config = tmp_path / "aws-config"
    # A named profile's credentials come from the profile (botocore skips the environment).
    config.write_text(f"[profile private-ca]\nca_bundle = {tls_s3.ca_file}\n"
                      f"aws_access_key_id = {tls_s3.access_key}\n"
                      f"aws_secret_access_key = {tls_s3.secret_key}\n")
    tls_sync.env_overrides["AWS_CONFIG_FILE"] = str(config)
    first = tls_sync.run("--profile", "private-ca", *FAST)
    assert first.code == 0, first.err
    assert stored(tls_s3, tls_sync.bucket, tls_sync.prefix) == FILES
    second = tls_sync.run("--profile", "private-ca", *FAST)
    assert second.code == 0 and second.summary["uploaded"] == "0", second.err


def test_untrusted_certificate_is_exit_6_without_retrying(tls_sync, tls_s3):
    with CountingRelay(tls_s3.port) as relay:
        endpoint = f"https://127.0.0.1:{relay.port}"
        tls_sync.endpoint_url = endpoint
        result = tls_sync.run("--retry-timeout", "60s")
    assert result.code == 6, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert endpoint in lines[0] and "AWS_CA_BUNDLE" in lines[0] and "ca_bundle" in lines[0]
    assert relay.connections == 1  # one handshake, no retry


def test_crt_tls_failure_is_not_retried(tls_s3, tmp_path):
    """The CRT's own TLS error (here: it trusts a different CA) is classified like botocore's
    SSLError: one attempt, then exit 6 with the endpoint named."""
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    bucket = f"jst-{uuid.uuid4().hex[:16]}"
    tls_s3.create_bucket(bucket)
    with CountingRelay(tls_s3.port) as relay:
        endpoint = f"https://127.0.0.1:{relay.port}"
        probe = tls_s3.client(endpoint_url=endpoint)
        credentials = Credentials(tls_s3.access_key, tls_s3.secret_key)
        crt = CrtS3.create(probe, bucket, "us-east-1", credentials, 4,
                           timeout=30, connect_timeout=10, ca_file=str(other_ca))
        counter = Attempts()
        with pytest.raises(CrtConnectionError) as caught:
            RetryPolicy(5, 60).call(lambda: crt.list_page("", None), counter)
    assert counter.count == 1 and relay.connections == 1
    assert fatal_class(caught.value) is ConfigError
    assert endpoint in fatal_reason(caught.value)


def test_unreadable_ca_bundle_is_exit_6_naming_it(tls_sync, tmp_path):
    missing = tmp_path / "no-such-ca.pem"
    tls_sync.env_overrides["AWS_CA_BUNDLE"] = str(missing)
    result = tls_sync.run()
    assert result.code == 6, result.err
    assert len(result.err.strip().splitlines()) == 1 and str(missing) in result.err


def _credential_region(request) -> str | None:
    found = re.search(r"Credential=[^/]+/\d+/([^/]+)/", request.header("authorization"))
    return found.group(1) if found else None


def test_crt_signs_for_the_region_botocore_was_redirected_to(sync, s3):
    """The proxy answers like S3 for a bucket in eu-west-1: any request signed for another
    region gets 400 AuthorizationHeaderMalformed with <Region>. The profile says us-east-1
    (s3.env()); botocore follows the redirect, and the CRT must sign for eu-west-1 too."""
    def in_eu_west_1(request):
        if _credential_region(request) not in (None, "eu-west-1"):
            return Fault(400, "AuthorizationHeaderMalformed", fields=(("Region", "eu-west-1"),))
        return None

    for rel, data in FILES.items():
        sync.write(rel, data)
    with RecordingProxy(s3.port, in_eu_west_1) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        err = assert_synced_twice(sync)
        puts = [r for r in proxy.requests if r.operation == "PutObject"]
    assert "signing for region eu-west-1" in err
    assert len(puts) == len(FILES) and {_credential_region(r) for r in puts} == {"eu-west-1"}


def test_proxy_that_botocore_uses_carries_bodies_and_listings_too(sync, s3):
    """HTTP_PROXY with NO_PROXY=127.0.0.0/8: botocore (urllib's rule: no CIDR) sends through
    the proxy, while awscrt, which reads the same variables itself and does match CIDR,
    would go direct: the run's requests would split between two paths. botocore decides:
    when it uses a proxy, bodies and LIST pages go through botocore as well."""
    for rel, data in FILES.items():
        sync.write(rel, data)
    with RecordingProxy(s3.port) as proxy:
        sync.env_overrides.update(HTTP_PROXY=proxy.endpoint_url, NO_PROXY="127.0.0.0/8",
                                  no_proxy="127.0.0.0/8")
        first = sync.run("-v")
        assert first.code == 0, first.err
        second = sync.run("-v")
        assert second.code == 0 and second.summary["uploaded"] == "0", second.err
        operations = proxy.operations()
    assert operations["PutObject"] == len(FILES)
    assert operations["ListObjects"] >= 4  # each run's bucket check and listing
    assert "awscrt path off: HTTP_PROXY applies" in first.err
    assert stored(s3, sync.bucket, sync.prefix) == FILES
