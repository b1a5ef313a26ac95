"""A fresh PostgreSQL database for the tests of the PostgreSQL journal.

Every machine of this project (CI included) runs PostgreSQL on 127.0.0.1:5432 with trust
auth. Each test session creates its own database (`js_<uuid>`) from the `postgres` one and
drops it at the end, so parallel workers and parallel helpers never share rows. Under
CI=true a server that does not answer fails the test; elsewhere the test is skipped with
one line, as a developer's laptop may have no PostgreSQL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

HOST = os.environ.get("JOURNALSYNC_TEST_PG_HOST", "127.0.0.1")
PORT = int(os.environ.get("JOURNALSYNC_TEST_PG_PORT", "5432"))


def _admin_connect():
    import psycopg

    last: Exception | None = None
    for user in (os.environ.get("JOURNALSYNC_TEST_PG_USER"), "postgres", "root"):
        if user is None:
            continue
        try:
            return psycopg.connect(host=HOST, port=PORT, user=user, dbname="postgres",
                                   autocommit=True, connect_timeout=5), user
        except psycopg.OperationalError as exc:
            last = exc
    raise last  # type: ignore[misc]


def unavailable(reason: str) -> None:
    """Fail under CI=true, else skip: the one rule of every PostgreSQL test."""
    message = f"PostgreSQL at {HOST}:{PORT} did not answer ({reason})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database, dropped afterwards (with force: a killed
    journalsync may still hold a session)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed: pip install -e '.[test]'")
    try:
        admin, user = _admin_connect()
    except Exception as exc:  # noqa: BLE001 - any failure to connect is "did not answer"
        unavailable(" ".join(str(exc).split())[:200])
    name = f"js_{uuid.uuid4().hex[:16]}"
    with admin:
        try:
            # A natural-language default collation, as most users' databases have (this
            # machine's are C.UTF-8): the journal must still sort keys as bytes.
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu '
                          "ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'")
        except Exception:  # noqa: BLE001 - a server built without ICU: its own default
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://{user}@{HOST}:{PORT}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
