"""The journal package: the only code that runs SQL."""

from journalsync.journal.plans import BATCH
from journalsync.journal.store import Journal
from journalsync.journal.uploads import UploadRecord

__all__ = ["BATCH", "Journal", "UploadRecord"]
