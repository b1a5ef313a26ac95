"""The fixed cost of a journalsync process: `--help`, `--version` and `status` wall, and a
no-op run's overhead (wall minus its own `elapsed=`), split into the part before the
summary line and the part after it (the process ending). Medians of --repeat runs.
Each also gets its CPU seconds (user + sys of the process, from wait4): on a busy machine
they move far less than wall times do.

One local `rclone serve s3`, one tree of --files small files (2,000 by default, as the
mixed tree of bench.py), synced once, then synced again --repeat times with nothing to do.

    python bench/startup.py [--repeat 5] [--files 2000]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from journalsync.devtools.localserver import RcloneS3Server

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench" / "startup"


def make_tree(root: Path, files: int) -> None:
    rng = random.Random(14)
    for i in range(files):
        folder = root / f"d{i % 40:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.bin").write_bytes(rng.randbytes(rng.randint(1, 64 * 1024)))


def timed(cmd: list[str], env: dict[str, str]) -> tuple[str, float, float, float]:
    """(first stdout line, seconds until it arrived, seconds until the process ended, its
    CPU seconds: user + sys)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=WORK, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    at_line = time.monotonic() - start
    proc.stdout.read()
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return line, at_line, time.monotonic() - start, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    tree, journal = WORK / "tree", WORK / "journal.sqlite"
    make_tree(tree, args.files)
    exe = [sys.executable, "-m", "journalsync"]
    with RcloneS3Server(WORK / "server") as server:
        server.create_bucket("startup")
        # unbuffered: the summary line is timed when it is printed, not when the process ends
        env = {**os.environ, **server.env(), "PYTHONUNBUFFERED": "1",
               "XDG_STATE_HOME": str(WORK / "state")}
        run = [*exe, "run", str(tree), "s3://startup/t", "--journal", str(journal)]
        subprocess.run(run, env=env, cwd=WORK, check=True, stdout=subprocess.DEVNULL)
        rows: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            for name, extra in (("--help", ["--help"]), ("--version", ["--version"]),
                                ("status", ["status", "--journal", str(journal)])):
                _, _, wall, cpu = timed([*exe, *extra], env)
                rows.setdefault(f"{name} wall", []).append(wall)
                rows.setdefault(f"{name} CPU", []).append(cpu)
            line, at_line, wall, cpu = timed(run, env)
            elapsed = float(re.search(r"elapsed=([\d.]+)s", line).group(1))
            for name, value in (("no-op wall", wall), ("no-op CPU", cpu),
                                ("no-op elapsed=", elapsed),
                                ("no-op wall - elapsed=", wall - elapsed),
                                ("  start to summary line - elapsed=", at_line - elapsed),
                                ("  summary line to exit", wall - at_line)):
                rows.setdefault(name, []).append(value)
    print(f"{os.uname().nodename}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"medians of {args.repeat}, seconds")
    for name, values in rows.items():
        print(f"{name:36s} {statistics.median(values):6.3f}   "
              f"({', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
