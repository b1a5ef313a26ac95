"""journalsync: resumable one-way sync of a local directory into S3-compatible storage.

Every phase (scan, manifest, plan, transfer) reads from and writes to one SQLite journal,
so any phase can be re-run after a crash.
"""

__version__ = "0.1.0"

