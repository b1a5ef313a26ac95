"""What the journal's home costs: the same tree synced with the journal in SQLite and in
PostgreSQL (127.0.0.1:5432), a first run and a no-op run each, against rclone serve s3 on
loopback. Prints wall seconds per run and the PostgreSQL/SQLite ratio.

    .venv/bin/python bench/pgjournal.py --files 20000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from journalsync.devtools.localserver import RcloneS3Server  # noqa: E402
from tests.support.pg import fresh_database  # noqa: E402


def make_tree(root: Path, files: int) -> None:
    for i in range(files):
        path = root / f"d{i % 100:02}" / f"f{i:06}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (i % 300))


def timed(cmd: list[str], env: dict) -> float:
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    took = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed: {proc.stderr}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--noops", type=int, default=3, help="no-op runs (the best is shown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, fresh_database() as url:
        tmp = Path(tmp)
        make_tree(tmp / "src", args.files)
        with RcloneS3Server(tmp / "data") as s3:
            env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            env.update(s3.env(), XDG_STATE_HOME=str(tmp / "state"),
                       AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
            times = {}
            for name, journal in (("sqlite", str(tmp / "j.sqlite")), ("postgresql", url)):
                bucket = f"bench-{uuid.uuid4().hex[:8]}"
                s3.create_bucket(bucket)
                cmd = [sys.executable, "-m", "journalsync", "run", str(tmp / "src"),
                       f"s3://{bucket}/p", "--journal", journal, "-q"]
                first = timed(cmd, env)
                noop = min(timed(cmd, env) for _ in range(args.noops))
                times[name] = (first, noop)
                print(f"{name:10} first {first:7.2f}s  no-op {noop:6.2f}s", flush=True)
    (f_sql, n_sql), (f_pg, n_pg) = times["sqlite"], times["postgresql"]
    print(f"postgresql/sqlite: first {f_pg / f_sql:.2f}x, no-op {n_pg / n_sql:.2f}x "
          f"({args.files} files)")


if __name__ == "__main__":
    main()
