"""The journal package: the only code that runs SQL."""

from journalsync.journal.store import Journal, UploadRecord

__all__ = ["Journal", "UploadRecord"]
