"""Bad credentials against a moto server that checks them (a subprocess started with
INITIAL_NO_AUTH_ACTION_COUNT=0, so every request is authenticated against moto's IAM)."""

from __future__ import annotations

import pytest

from journalsync.devtools.localserver import MotoS3Server
from tests.conftest import Sync


@pytest.fixture(scope="module")
def strict_moto():
    with MotoS3Server(enforce_auth=True) as server:
        yield server


def test_bad_credentials_moto_with_auth(strict_moto, tmp_path):
    sync = Sync(strict_moto, "any-bucket", tmp_path)
    sync.write("a.txt", b"a")
    result = sync.run()
    assert result.code == 4, (result.out, result.err)
    assert "InvalidAccessKeyId" in result.err
    assert len(result.err.strip().splitlines()) == 1
