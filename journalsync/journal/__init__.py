"""The journal package: the only code that runs SQL.

Its names are loaded on first use (PEP 562): `journalsync journals` reads journals with
plain sqlite3 (catalog.py) and needs migrate.HEAD_REVISION, and importing this package for
them must not import SQLAlchemy (about a third of a second) as well.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from journalsync.journal.plans import BATCH
    from journalsync.journal.store import Journal
    from journalsync.journal.uploads import UploadRecord

_HOMES = {"BATCH": "journalsync.journal.plans", "Journal": "journalsync.journal.store",
          "UploadRecord": "journalsync.journal.uploads"}

__all__ = ["BATCH", "Journal", "UploadRecord"]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name]), name)
    globals()[name] = value  # looked up once
    return value
