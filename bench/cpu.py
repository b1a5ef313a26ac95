"""Client CPU seconds per GiB sent, large files, warm page cache (issue 14).

Each tool (journalsync, rclone sync, s5cmd sync; or journalsync from another checkout, to
compare two versions in the same run) uploads the same tree of new large files into an empty
bucket of one local `rclone serve s3`, round after round, the tools interleaved. For each
run: user + system CPU seconds of the tool and its children (wait4), per GiB sent, and wall
seconds. CPU seconds are fair on a busy machine; wall seconds are not (the server shares
the cores). Each bucket is checked (object count and bytes) and then deleted.

    python bench/cpu.py [--tree 8x64] [--rounds 3] [--tools journalsync,rclone,s5cmd]
                        [--variant base=/path/to/other/checkout] [--js-args "--part-size 16MiB"]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench import BIN, machine, peak_rss_mb, peer_command, tool_env  # noqa: E402
from journalsync.devtools.localserver import RcloneS3Server  # noqa: E402

WORK = ROOT / ".bench-cpu"
MiB = 1 << 20


def generate(root: Path, count: int, mib: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = root / f"big{i:02d}.bin"
        if path.exists() and path.stat().st_size == mib * MiB:
            continue
        with open(path, "wb") as fh:
            for _ in range(mib):
                fh.write(os.urandom(MiB))
    for path in root.iterdir():  # warm the page cache: every tool reads from memory
        with open(path, "rb") as fh:
            while fh.read(8 * MiB):
                pass


def compile_checkout(checkout: Path) -> None:
    """Bytecode for a checkout's journalsync, as an installed one has (pip writes it): with
    PYTHONDONTWRITEBYTECODE=1 in the environment no run writes any, and each run would
    compile every module from source, about 0.14 CPU-s of each process (0.28 s/GiB of an
    8 x 64 MiB tree) that no installed journalsync pays. A stale .pyc is never used."""
    import compileall

    for package in ("journalsync", "migrations"):
        if (checkout / package).is_dir():
            compileall.compile_dir(checkout / package, quiet=2)


def command(tool: str, src: Path, bucket: str, endpoint: str, js_args: list[str]) -> list[str]:
    if tool == "rclone" or tool == "s5cmd":
        return peer_command(tool, src, bucket, endpoint)
    journal = WORK / f"{tool}.sqlite"
    for old in WORK.glob(f"{tool}.sqlite*"):
        old.unlink()  # every file is new to every run
    return [sys.executable, "-m", "journalsync", "run", str(src), f"s3://{bucket}",
            "--endpoint-url", endpoint, "--journal", str(journal), *js_args]


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_one(tool: str, cmd: list[str], env: dict, server, bucket: str, log) -> tuple:
    server_before = proc_cpu(server.proc.pid)
    log.write(f"\n### {tool}: {' '.join(cmd)}\n")
    log.flush()
    started = time.monotonic()
    # cwd outside any checkout: `python -m journalsync` imports the one PYTHONPATH names
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            cwd=WORK)
    peak = 0.0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, peak_rss_mb(proc.pid))
        time.sleep(0.02)
    wall = time.monotonic() - started
    listing = server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return (usage.ru_utime, usage.ru_stime, wall, peak, os.waitstatus_to_exitcode(status),
            len(listing), sum(o["Size"] for o in listing), proc_cpu(server.proc.pid) - server_before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default="8x64", help="COUNTxMiB, e.g. 8x64 or 2x1024")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tools", default="journalsync,rclone,s5cmd")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=CHECKOUT[::OPTIONS]: also run journalsync from that checkout "
                        "(. for this one) as NAME, with these extra options")
    parser.add_argument("--js-args", default="", help="extra options for every journalsync run")
    args = parser.parse_args()
    count, mib = (int(x) for x in args.tree.split("x"))
    gib = count * mib / 1024
    WORK.mkdir(exist_ok=True)
    src = WORK / f"tree-{args.tree}"
    generate(src, count, mib)
    variants = {v.split("=", 1)[0]: (v.split("=", 1)[1] + "::").split("::")[:2]
                for v in args.variant}
    for checkout in {ROOT, *(Path(c).resolve() for c, _ in variants.values())}:
        compile_checkout(checkout)
    tools = [t for t in args.tools.split(",") if t] + list(variants)
    runs: dict[str, list[tuple]] = {t: [] for t in tools}
    print(f"== cpu: {count} x {mib} MiB, warm cache; {machine()}; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    with RcloneS3Server(WORK / "s3", log_file=WORK / "server.log") as server, \
            open(WORK / "cpu.log", "w") as log:
        base_env = tool_env(server)
        for rnd in range(args.rounds):
            for tool in tools:
                bucket = f"cpu-{tool}-{rnd}".lower().replace("_", "-")
                server.create_bucket(bucket)
                env = dict(base_env)
                js_args = shlex.split(args.js_args)
                if tool in variants:
                    checkout, extra = variants[tool]
                    env["PYTHONPATH"] = str(Path(checkout).resolve())
                    js_args += shlex.split(extra)
                cmd = command(tool, src, bucket, server.endpoint_url, js_args)
                r = run_one(tool, cmd, env, server, bucket, log)
                shutil.rmtree(server.data_dir / bucket, ignore_errors=True)
                runs[tool].append(r)
                ok = "ok" if r[4] == 0 and r[5] == count and r[6] == count * mib * MiB else \
                    f"BAD exit {r[4]}, {r[5]} objects, {r[6]} bytes"
                print(f"round {rnd} {tool:12} user {r[0]:6.2f} sys {r[1]:6.2f} "
                      f"cpu/GiB {(r[0] + r[1]) / gib:5.2f} server {r[7] / gib:5.2f} wall {r[2]:6.2f}s "
                      f"rss {r[3]:4.0f} MB load {os.getloadavg()[0]:.1f} {ok}", flush=True)
    print(f"\nmedians of {args.rounds} ({count} x {mib} MiB; wall on a shared machine is noisy):")
    print("| tool | user s/GiB | sys s/GiB | CPU s/GiB | server CPU s/GiB | wall | MiB/s | peak RSS |")
    print("|---|---|---|---|---|---|---|---|")
    for tool, rs in runs.items():
        med = lambda i: statistics.median(r[i] for r in rs)  # noqa: E731
        cpu = statistics.median((r[0] + r[1]) for r in rs)
        print(f"| {tool} | {med(0) / gib:.2f} | {med(1) / gib:.2f} | {cpu / gib:.2f} | {med(7) / gib:.2f} | "
              f"{med(2):.1f}s | {count * mib / med(2):.0f} | {med(3):.0f} MB |")


if __name__ == "__main__":
    main()
