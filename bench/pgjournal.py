"""What the journal's home costs (issue 15's coordination cost): the same tree synced with
the journal in SQLite and in PostgreSQL (127.0.0.1:5432, one process: the run is its only
worker, claiming its chunks from the journal), a first run into a fresh bucket and a no-op
run each, against rclone serve s3 on loopback. Rounds alternate which journal goes first, so
a slow minute of the machine does not land on one side only. Prints the medians of --rounds
and the PostgreSQL/SQLite ratios (target: <= 1.15x on the 50,000-file tree).

    .venv/bin/python bench/pgjournal.py [--files 50000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
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
    parser.add_argument("--files", type=int, default=50000)
    parser.add_argument("--rounds", type=int, default=3, help="first runs and no-ops per journal (medians)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, fresh_database() as url:
        tmp = Path(tmp)
        make_tree(tmp / "src", args.files)
        with RcloneS3Server(tmp / "data") as s3:
            env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            env.update(s3.env(), XDG_STATE_HOME=str(tmp / "state"),
                       AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
            times: dict[str, dict[str, list[float]]] = {}
            for round_ in range(args.rounds):
                homes = [("sqlite", None), ("postgresql", url)]
                for name, pg in (homes if round_ % 2 == 0 else homes[::-1]):
                    bucket = f"bench-{uuid.uuid4().hex[:8]}"
                    s3.create_bucket(bucket)
                    journal = pg or str(tmp / f"j{round_}.sqlite")
                    cmd = [sys.executable, "-m", "journalsync", "run", str(tmp / "src"),
                           f"s3://{bucket}/p", "--journal", journal, "-q"]
                    if pg:
                        cmd += ["--job", f"bench{round_}"]
                    first, noop = timed(cmd, env), timed(cmd, env)
                    mine = times.setdefault(name, {"first": [], "no-op": []})
                    mine["first"].append(first)
                    mine["no-op"].append(noop)
                    print(f"round {round_ + 1} {name:10} first {first:7.2f}s  no-op {noop:6.2f}s", flush=True)
    med = {name: {phase: statistics.median(v) for phase, v in phases.items()}
           for name, phases in times.items()}
    for name, phases in med.items():
        print(f"median {name:10} first {phases['first']:7.2f}s  no-op {phases['no-op']:6.2f}s")
    print(f"postgresql/sqlite ({args.files} files, medians of {args.rounds}): "
          f"first {med['postgresql']['first'] / med['sqlite']['first']:.2f}x, "
          f"no-op {med['postgresql']['no-op'] / med['sqlite']['no-op']:.2f}x")


if __name__ == "__main__":
    main()
