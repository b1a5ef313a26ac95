"""The journal does not grow without bound: two weeks of nightly runs of a 20,000-file tree
with 1% churn, --delete, a dry run every fifth night and a file that fails every night
leaves the journal (WAL included) within 1.3x its size after the first run, with the
history bounded to --keep-runs (10 here, so the pruning runs for the last nights; a month
at the default 30 took 3 min alone and over the 300 s timeout beside the rest of the suite).
The tree was 50,000 files until the suite outgrew its 15 minutes: 155 s of a 16-minute
`make test` on a quiet machine. At 20,000 the journal's growth is the same shape (max 1.07x
the first night's size, the pruned nights smaller than the first) in 94 s on a loaded one.

Heavy, so only against `rclone serve s3` (the fastest of our servers for many small
objects), with tiny files and the engine driven in-process (no interpreter start-up per
run); the store is still a real S3 server over HTTP.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from journalsync.config import Config, Destination
from journalsync.engine import run_sync

pytestmark = pytest.mark.slow

FILES, DIRS, NIGHTS = 20_000, 100, 14
KEEP_RUNS = 10
CHURN, ADDED, REMOVED = 200, 20, 20
DRY_RUN_EVERY = 5


def on_disk(journal: Path) -> int:
    """The journal's bytes, WAL included."""
    wal = journal.with_name(journal.name + "-wal")
    return journal.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def make_tree(src: Path) -> list[Path]:
    files = []
    for d in range(DIRS):
        (src / f"d{d:03}").mkdir(parents=True)
    for i in range(FILES):
        path = src / f"d{i % DIRS:03}" / f"f{i:05}"
        path.write_bytes(b"%d" % i)
        files.append(path)
    # A key over S3's 1024-byte limit: a permanent per-file error, one file_errors row a night.
    deep = src.joinpath(*["x" * 250] * 5)
    deep.mkdir(parents=True)
    (deep / "too-long").write_bytes(b"never uploaded")
    return files


def churn(files: list[Path], night: int) -> None:
    """Rewrite CHURN files with new content, add ADDED and remove REMOVED."""
    start = (night * CHURN) % (len(files) - CHURN)
    for path in files[start:start + CHURN]:
        path.write_bytes(b"night %d %s" % (night, path.name.encode()))
    for path in files[-REMOVED:]:
        path.unlink()
    del files[-REMOVED:]
    for n in range(ADDED):
        path = files[0].parent.parent / f"d{n:03}" / f"n{night:02}-{n:02}"
        path.write_bytes(b"new")
        files.insert(0, path)


@pytest.mark.timeout(900)  # at 50,000 files: 140-160 s alone on 2 cores, 241 s in a loaded make test
def test_a_month_of_nights_keeps_the_journal_small(s3, bucket, tmp_path, monkeypatch):
    if s3.name != "rclone":
        pytest.skip("heavy: rclone serve s3 only")
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    began = time.monotonic()
    src, journal = tmp_path / "src", tmp_path / "journal.sqlite"
    files = make_tree(src)
    cfg = Config(source=src, dest=Destination(bucket, "nightly"), journal_path=journal,
                 endpoint_url=s3.endpoint_url, delete=True, workers=8, keep_runs=KEEP_RUNS)
    first = run_sync(cfg)
    assert first.counts.uploaded == FILES and first.counts.failed == 1
    sizes, made = [on_disk(journal)], 1
    for night in range(1, NIGHTS):
        churn(files, night)
        if night % DRY_RUN_EVERY == 0:
            run_sync(Config(**{**_fields(cfg), "dry_run": True}))
            made += 1
        made += 1
        outcome = run_sync(cfg)
        assert outcome.counts.uploaded == CHURN + ADDED, outcome
        sizes.append(on_disk(journal))
    print(f"\njournal bytes per night: first {sizes[0]}, max {max(sizes)}, last {sizes[-1]}; "
          f"{time.monotonic() - began:.0f}s; all: {sizes}")
    with sqlite3.connect(journal) as db:
        runs = db.execute("SELECT count(*) FROM runs").fetchone()[0]
        errors = db.execute("SELECT count(*) FROM file_errors").fetchone()[0]
    assert runs == cfg.keep_runs < made  # 16 runs made, 10 kept
    assert errors == cfg.keep_runs
    assert max(sizes) <= 1.3 * sizes[0], sizes


def _fields(cfg: Config) -> dict:
    return {name: getattr(cfg, name) for name in cfg.__dataclass_fields__}
