"""`journalsync run --config job.toml`: a sync job written down once, for cron.

    source = "/srv/www"
    destination = "s3://assets/site"
    endpoint = "https://acc.r2.cloudflarestorage.com"   # optional
    profile = "publisher"                               # optional
    provider = "r2"                                     # optional
    checksum = "crc64nvme"              # optional: auto (the provider's), md5 or crc64nvme
    large_files = "auto"                # optional: auto, stream or prehash (--large-files)
    workers = 16
    include = ["**"]
    exclude = ["*.tmp", "node_modules/**"]
    storage_class = "STANDARD_IA"
    multipart_threshold = "64MiB"
    part_size = "16MiB"
    part_unit = "128MiB"                # a large file's parts shared by workers (PostgreSQL)
    keep_runs = 30                      # runs of history kept in the journal
    adopt_metadata = false              # --adopt-metadata (adopt.py, adoptcopy.py)

    [cache_control]                     # first matching glob wins
    "*.html" = "no-cache"
    "assets/**" = "max-age=31536000, immutable"

    [encryption]
    sse = "aws:kms"                     # or "AES256"
    kms_key_id = "arn:aws:kms:..."

    [delete]
    enabled = true
    max_percent = 5
    max_count = 1000
    allow_empty_source = false

Flags given on the command line override the file. Unknown keys are errors, not silently
ignored: a typo in `[delete]` must not turn into a different mirror.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from journalsync.config import parse_duration, parse_size
from journalsync.errors import UsageError
from journalsync.journal.location import is_url

_TOP = {"source", "destination", "endpoint", "profile", "region", "provider", "checksum",
        "large_files", "workers",
        "include", "exclude", "cache_control", "storage_class", "encryption", "delete",
        "multipart_threshold", "part_size", "bwlimit", "retry_timeout", "journal", "crt",
        "resume_max_age", "keep_runs", "adopt_metadata", "job", "part_unit"}
_DELETE = {"enabled", "max_percent", "max_count", "allow_empty_source", "force"}
_ENCRYPTION = {"sse", "kms_key_id"}
_STRINGS = {"source", "destination", "endpoint", "profile", "region", "provider", "checksum",
            "large_files", "storage_class", "multipart_threshold", "part_size", "bwlimit", "retry_timeout",
            "journal", "resume_max_age", "job", "part_unit"}


def load(path: Path) -> dict[str, Any]:
    """Read and check a job file; errors name the file and, for syntax, the line."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"job file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"job file {path}: {exc}") from None  # "... (at line 3, column 9)"
    _check(path, data)
    return data


def _check(path: Path, data: dict) -> None:
    def fail(msg: str):
        raise UsageError(f"job file {path}: {msg}")

    for key in data.keys() - _TOP:
        fail(f"unknown setting {key!r}")
    for key in _STRINGS & data.keys():
        if not isinstance(data[key], str):
            fail(f"{key} must be a string")
    for key in ("workers", "keep_runs"):
        if key in data and (not isinstance(data[key], int) or isinstance(data[key], bool)):
            fail(f"{key} must be a whole number")
    for key in ("crt", "adopt_metadata"):
        if key in data and not isinstance(data[key], bool):
            fail(f"{key} must be true or false")
    for key in ("include", "exclude"):
        if key in data and not (isinstance(data[key], list) and all(isinstance(p, str) for p in data[key])):
            fail(f"{key} must be a list of glob strings")
    cache = data.get("cache_control", {})
    if not isinstance(cache, (dict, str)) or (isinstance(cache, dict) and not all(
            isinstance(v, str) for v in cache.values())):
        fail("cache_control must be a string or a table of glob = value")
    for section, allowed in (("delete", _DELETE), ("encryption", _ENCRYPTION)):
        table = data.get(section, {})
        if not isinstance(table, dict):
            fail(f"[{section}] must be a table")
        for key in table.keys() - allowed:
            fail(f"unknown setting {key!r} in [{section}]")
    _check_delete(data.get("delete", {}), fail)
    sse = data.get("encryption", {}).get("sse")
    if sse not in (None, "AES256", "aws:kms"):
        fail("encryption.sse must be \"AES256\" or \"aws:kms\"")
    if data.get("encryption", {}).get("kms_key_id") and sse != "aws:kms":
        fail("encryption.kms_key_id needs sse = \"aws:kms\"")


def _check_delete(table: dict, fail) -> None:
    """[delete]'s types, strictly: `force = "false"` is a non-empty string, and a string
    taken for a boolean would be true, lifting the caps that stop a mass delete."""
    for key in ("enabled", "allow_empty_source", "force"):
        if key in table and not isinstance(table[key], bool):
            fail(f"delete.{key} must be true or false (unquoted), not {table[key]!r}")
    if "max_count" in table and (not isinstance(table["max_count"], int)
                                 or isinstance(table["max_count"], bool)):
        fail(f"delete.max_count must be a whole number (unquoted), not {table['max_count']!r}")
    if "max_percent" in table and (not isinstance(table["max_percent"], (int, float))
                                   or isinstance(table["max_percent"], bool)):
        fail(f"delete.max_percent must be a number (unquoted), not {table['max_percent']!r}")


# Job-file keys for each run() parameter: (section or None, key).
JOB_KEYS = {
    "source": (None, "source"), "dest": (None, "destination"), "endpoint_url": (None, "endpoint"),
    "profile": (None, "profile"), "region": (None, "region"), "provider": (None, "provider"),
    "checksum": (None, "checksum"), "large_files": (None, "large_files"), "workers": (None, "workers"), "include": (None, "include"), "exclude": (None, "exclude"),
    "storage_class": (None, "storage_class"), "multipart_threshold": (None, "multipart_threshold"),
    "part_size": (None, "part_size"), "bwlimit": (None, "bwlimit"),
    "retry_timeout": (None, "retry_timeout"), "journal": (None, "journal"), "crt": (None, "crt"),
    "resume_max_age": (None, "resume_max_age"), "keep_runs": (None, "keep_runs"),
    "adopt_metadata": (None, "adopt_metadata"), "job": (None, "job"),
    "part_unit": (None, "part_unit"),
    "sse": ("encryption", "sse"), "sse_kms_key_id": ("encryption", "kms_key_id"),
    "delete": ("delete", "enabled"), "max_delete_percent": ("delete", "max_percent"),
    "max_delete": ("delete", "max_count"), "allow_empty_source": ("delete", "allow_empty_source"),
    "force": ("delete", "force"),
}


def transfer_settings(p: dict) -> dict:
    """How files are sent, for a run and for a worker alike (a worker has no options of
    these: it takes them from its --config job file, or the defaults). Config fields."""
    def text(name: str, default: str) -> str:
        return str(p.get(name) or default).lower()

    return dict(
        region=p.get("region"), profile=p.get("profile"),
        workers=8 if p.get("workers") is None else p["workers"],
        multipart_threshold=parse_size(p.get("multipart_threshold") or "8MiB"),
        part_size=parse_size(p.get("part_size") or "8MiB"),
        part_unit=parse_size(p.get("part_unit") or "128MiB"),
        cache_control=p.get("cache_control"), cache_rules=p.get("cache_rules") or (),
        storage_class=p.get("storage_class"), sse=p.get("sse"),
        sse_kms_key_id=p.get("sse_kms_key_id"), provider=text("provider", "auto"),
        checksum=text("checksum", "auto"), large_files=text("large_files", "auto"),
        bwlimit=parse_size(p["bwlimit"]) if p.get("bwlimit") else None,
        retry_timeout=parse_duration(p.get("retry_timeout") or "3m"),
        crt=p.get("crt", True))


def with_job(params: dict, given: set[str], job: dict) -> dict:
    """A command's parameters with the job file's values where the command line gave none
    (`given`: the names it gave), cache_control split into a header or per-glob rules."""
    params = dict(params, cache_rules=())
    for name, (section, key) in JOB_KEYS.items():
        table = job.get(section, {}) if section else job
        if name not in given and key in table:
            params[name] = table[key]
    if params.get("journal") and not isinstance(params["journal"], Path) \
            and not is_url(params["journal"]):
        params["journal"] = Path(params["journal"]).expanduser()
    rules = job.get("cache_control")
    if "cache_control" not in given and isinstance(rules, str):
        params["cache_control"] = rules
    elif "cache_control" not in given and isinstance(rules, dict):
        params["cache_rules"] = tuple(rules.items())
    return params
