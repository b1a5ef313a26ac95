"""Logging: stderr for people, an optional file (text or JSON lines) for machines, and a
filter on every handler so no secret key, session token or request signature is ever
written, at any level. botocore logs signed headers (with the session token) and
signatures at DEBUG; `--debug` turns that on, so the filter is not optional."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from pathlib import Path

_PATTERNS = [
    (re.compile(r"(Signature=)[0-9a-fA-F]{16,}"), r"\1<redacted>"),
    (re.compile(r"(Signature:\s*)[0-9a-fA-F]{16,}"), r"\1<redacted>"),
    (re.compile(r"(Credential=)[^/\s,'\"]+"), r"\1<redacted>"),
    (re.compile(r"(X-Amz-Security-Token'?\"?\s*[:=]\s*b?['\"]?)[^'\"\s,}]+", re.I), r"\1<redacted>"),
    (re.compile(r"(X-Amz-Signature=)[^&\s'\"]+", re.I), r"\1<redacted>"),
    (re.compile(r"((?:aws_)?(?:secret_access_key|session_token|secret_key)'?\"?\s*[:=]\s*['\"]?)"
                r"[^'\"\s,}]+", re.I), r"\1<redacted>"),
]


class RedactSecrets(logging.Filter):
    """Rewrites each record's message with secrets replaced by `<redacted>`."""

    def __init__(self, secrets: list[str] | None = None):
        super().__init__()
        self.secrets = [s for s in (secrets or []) if s and len(s) >= 8]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "<redacted>")
        for pattern, repl in _PATTERNS:
            text = pattern.sub(repl, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg = self.redact(message)
        record.args = ()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": round(record.created, 3), "level": record.levelname,
                           "logger": record.name, "message": record.getMessage()})


def known_secrets() -> list[str]:
    """Secret values from the environment, to scrub literally wherever they appear."""
    return [os.environ.get(name, "") for name in
            ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")]


def setup(verbose: bool = False, debug: bool = False, log_file: Path | None = None,
          log_format: str = "text") -> None:
    """stderr: warnings (info with -v, everything with --debug); the file: info or debug."""
    redact = RedactSecrets(known_secrets())
    root = logging.getLogger()
    root.handlers.clear()
    # The root level is the lowest any handler takes: a record no handler wants is dropped
    # before it is built (a per-file info line costs microseconds a million times over).
    root.setLevel(logging.DEBUG if debug else logging.INFO if verbose or log_file else logging.WARNING)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    console.addFilter(redact)
    root.addHandler(console)
    if log_file:
        handler = logging.FileHandler(log_file)
        handler.setLevel(logging.DEBUG if debug else logging.INFO)
        handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s"))
        handler.formatter.converter = time.gmtime
        handler.addFilter(redact)
        root.addHandler(handler)
    if not debug:
        for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
