"""retry.py classifies TLS failures, botocore's and the CRT's, as the local setup's: never
retried, exit 6, one line naming the endpoint and what to set."""

from __future__ import annotations

import pytest
from botocore.exceptions import SSLError

from journalsync.crt import CrtConnectionError
from journalsync.errors import ConfigError, FatalRemoteError
from journalsync.retry import fatal_class, fatal_reason, is_retryable

ENDPOINT = "https://minio.internal:9000"
BOTOCORE_TLS = SSLError(endpoint_url=f"{ENDPOINT}/bucket?list-type=2",
                        error="[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")


def crt(name: str) -> CrtConnectionError:
    return CrtConnectionError(f"{name}: ...", name, ENDPOINT)


@pytest.mark.parametrize("exc, retryable, fatal", [
    (BOTOCORE_TLS, False, ConfigError),
    (crt("AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE"), False, ConfigError),
    (crt("AWS_IO_TLS_HOST_NAME_MISMATCH"), False, ConfigError),
    # a link that failed mid-stream or timed out: retried like any dropped connection
    (crt("AWS_IO_TLS_ERROR_READ_FAILURE"), True, FatalRemoteError),
    (crt("AWS_IO_TLS_NEGOTIATION_TIMEOUT"), True, FatalRemoteError),
    (crt("AWS_IO_SOCKET_CONNECTION_REFUSED"), True, FatalRemoteError),
])
def test_tls_classification(exc, retryable, fatal):
    assert is_retryable(exc) is retryable
    assert fatal_class(exc) is fatal


@pytest.mark.parametrize("exc", [BOTOCORE_TLS, crt("AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE")])
def test_tls_reason_is_one_line_naming_endpoint_and_setting(exc):
    reason = fatal_reason(exc)
    assert "\n" not in reason and ENDPOINT in reason and "?list-type" not in reason
    assert "AWS_CA_BUNDLE" in reason and "ca_bundle" in reason
