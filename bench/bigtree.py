"""The big-tree bench (opt-in): new large files, cold page cache, one tool at a time.

For each tool (journalsync, aws s3 sync, rclone sync, s5cmd sync) on a tree of N x 1 GiB new
files (8 GiB by default), with the page cache dropped before each run:

- time to first upload byte: from the tool's start until the server has read 1 MiB more
  from its sockets than it had (the server's own /proc/<pid>/io rchar; LIST and HEAD
  requests are far smaller than that), so nothing sits in the data path;
- disk bytes read ÷ bytes sent: the tool's ru_inblock (512-byte blocks read from the disk,
  from wait4) over the tree's size. With 8 GiB and this much RAM a second read of a file is
  served from the page cache and does not show here, so also:
- bytes read ÷ bytes sent: the tool's rchar (every byte its read calls returned, from the
  page cache or the disk, sockets included), last polled just before it exited;
- CPU seconds per GiB sent: the tool's user + system time from wait4;
- peak RSS: the tool's VmHWM, polled.

Each bucket is deleted after its run so the disk holds one copy at a time. Dropping the page
cache needs root; elsewhere the script says so in one line and exits 0.

    python bench/bigtree.py [--gib 8] [--readme]     (make bench-big)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench import BIN, TOOLS, machine, peak_rss_mb, peer_command, tool_env, update_readme  # noqa: E402
from journalsync.devtools.localserver import RcloneS3Server  # noqa: E402

WORK = ROOT / ".bench-big"
GiB = 1 << 30


@dataclass
class Result:
    tool: str
    seconds: float
    first_byte: float | None
    read_bytes: int
    rchar: int
    cpu: float
    rss_mb: float
    exit_code: int
    objects: int
    stored: int


def generate(root: Path, gib: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(gib):
        path = root / f"big{i:02d}.bin"
        if path.exists() and path.stat().st_size == GiB:
            continue  # kept from an earlier run: random either way
        with open(path, "wb") as fh:
            for _ in range(1024):
                fh.write(os.urandom(1 << 20))


def rchar(pid: int) -> int:
    with open(f"/proc/{pid}/io") as fh:
        for line in fh:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return 0


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def command(tool: str, src: Path, bucket: str, endpoint: str, journal: Path) -> list[str]:
    if tool == "journalsync":
        return [str(BIN / "journalsync"), "run", str(src), f"s3://{bucket}", "--endpoint-url",
                endpoint, "--journal", str(journal)]
    return peer_command(tool, src, bucket, endpoint)


def run_one(tool: str, src: Path, server, env: dict, cap: float, log) -> Result:
    bucket = f"big-{tool}"
    server.create_bucket(bucket)
    for old in WORK.glob(f"{tool}.sqlite*"):
        old.unlink()  # a new journal: every file is new to every tool
    drop_caches()
    base = rchar(server.proc.pid)
    cmd = command(tool, src, bucket, server.endpoint_url, WORK / f"{tool}.sqlite")
    log.write(f"\n### {tool}: {' '.join(cmd)}\n")
    log.flush()
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    first, peak, read_calls = None, 0.0, 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, peak_rss_mb(proc.pid))
        try:
            read_calls = rchar(proc.pid)
        except OSError:
            pass  # exited between wait4 and here
        if first is None and rchar(server.proc.pid) - base > (1 << 20):
            first = time.monotonic() - started
        if time.monotonic() - started > cap:
            proc.kill()
        time.sleep(0.02)
    seconds = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    listing = server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    objects, stored = len(listing), sum(o["Size"] for o in listing)
    shutil.rmtree(server.data_dir / bucket, ignore_errors=True)  # one copy on disk at a time
    return Result(tool, seconds, first, usage.ru_inblock * 512, read_calls, usage.ru_utime + usage.ru_stime,
                  peak, code, objects, stored)


def table(results: list[Result], gib: int) -> str:
    total = gib * GiB
    lines = [f"{gib} x 1 GiB new files, page cache dropped before each run, one local "
             "`rclone serve s3`, default settings for every tool:", "",
             "| tool | wall | MiB/s | first upload byte | disk read ÷ sent | bytes read ÷ sent | CPU s/GiB | peak RSS | bucket |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ok = "ok" if r.exit_code == 0 and r.objects == gib and r.stored == total else \
            f"exit {r.exit_code}, {r.objects} objects, {r.stored:,} bytes"
        fb = f"{r.first_byte:.1f}s" if r.first_byte is not None else "-"
        lines.append(f"| {r.tool} | {r.seconds:.1f}s | {total / 2**20 / r.seconds:.0f} | {fb} | "
                     f"{r.read_bytes / total:.2f} | {r.rchar / total:.2f} | {r.cpu / gib:.2f} | {r.rss_mb:.0f} MB | {ok} |")
    js = next((r for r in results if r.tool == "journalsync"), None)
    peers = [r for r in results if r.tool != "journalsync" and r.exit_code == 0]
    if js and peers:
        fastest = min(peers, key=lambda r: r.seconds)
        lines += ["", f"journalsync ÷ fastest peer ({fastest.tool}), wall: "
                  f"{js.seconds / fastest.seconds:.2f}x; throughput {fastest.seconds / js.seconds:.2f}x"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=int, default=8, help="files of 1 GiB in the tree")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--cap", type=float, default=1200, help="seconds before a run is stopped")
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    parser.add_argument("--keep-tree", action="store_true", help="keep the tree for another run")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/bigtree.py: skipped: dropping the page cache needs root")
        return
    WORK.mkdir(exist_ok=True)
    src = WORK / "tree"
    print(f"== big tree: {args.gib} x 1 GiB; {machine()}", flush=True)
    generate(src, args.gib)
    results = []
    try:
        with RcloneS3Server(WORK / "s3", log_file=WORK / "rclone-server.log") as server, \
                open(WORK / "bigtree.log", "w") as log:
            env = tool_env(server)
            for tool in args.tools.split(","):
                r = run_one(tool, src, server, env, args.cap, log)
                results.append(r)
                print(f"{tool:12} {r.seconds:7.1f}s first byte {r.first_byte}s read "
                      f"{r.read_bytes / 2**20:.0f} MiB cpu {r.cpu:.1f}s rss {r.rss_mb:.0f} MB "
                      f"exit={r.exit_code}", flush=True)
    finally:
        shutil.rmtree(WORK / "s3", ignore_errors=True)
        if not args.keep_tree:
            shutil.rmtree(src, ignore_errors=True)
    text = f"Measured on {machine()}, `make bench-big`:\n\n" + table(results, args.gib)
    print("\n" + text)
    if args.readme:
        update_readme(text, "bench-big")


if __name__ == "__main__":
    main()
