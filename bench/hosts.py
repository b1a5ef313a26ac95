"""The many-hosts scaling bench (issue 15): one tree uploaded by 1, 2 and 4 hosts.

Each host is a network namespace with its own hostname and a veth link to the root
namespace, its uploads capped with `tc tbf` at --rate (50 Mbit/s), so throughput is bound
by the links and not by this machine's cores (tests/support/hostnet.py). `rclone serve s3`
runs in the root namespace and listens on each host's root-side veth address; PostgreSQL
(127.0.0.1:5432) is reached through a relay on the same address. Host 1 runs `journalsync
run` (scan, plan, chunks, and a share of the uploads), hosts 2..N run `journalsync worker`
once the run's chunks exist. Each run gets a fresh bucket and a fresh job.

The tree (generated once into .bench-hosts/tree, seeded): --big files of 8-64 MiB and
--small files of at most 64 KiB. Chunks of at most --chunk-bytes, so a large file is a
chunk alone.

With --one-file SIZE the tree is one file of SIZE (.bench-hosts/one-SIZE), sent by the
hosts together as units of --part-unit bytes of its parts (sharedparts.py). The run is
given --large-files prehash: the file is then shared even while the run is alone, as a
file over 5 GiB always is (a smaller one would be streamed when no worker has joined yet).

For each N: wall seconds (start of `run` to the exit of the last process), payload bytes/s,
scaling efficiency = bytes/s(N) / (N * bytes/s(1)), wire bytes / payload (the hosts' veth
tx counters) and whether the bucket equals the source (keys, sizes, sha256 metadata). With
--reps R the medians of R runs.

    sudo .venv/bin/python bench/hosts.py [--hosts 1,2,4] [--reps 3] [--rate 50mbit]

Root only; elsewhere it prints one line and exits 0. Its namespaces are jshb1..jshb4
(10.231.241-244.0/30), removed at start (leftovers of a killed bench) and at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench import machine  # noqa: E402
from tests.support.hostnet import Host, hosts, unavailable_reason  # noqa: E402

WORK = ROOT / ".bench-hosts"
JOURNALSYNC = str(Path(sys.executable).parent / "journalsync")
ACCESS_KEY, SECRET_KEY = "hosts-bench", "hosts-bench-secret"
PREFIX, SLOT = "jshb", 15  # 10.231.241-244: apart from the tests' hosts
MIB = 1 << 20


def generate_one(src: Path, size: int) -> None:
    """A tree of one file of `size` random bytes (--one-file)."""
    marker = src.parent / f"{src.name}.done"
    if not marker.exists():
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir(parents=True)
        with open(src / "big.img", "wb") as fh:
            for left in range(size, 0, -MIB):
                fh.write(os.urandom(min(MIB, left)))
        marker.write_text("")


def generate(src: Path, big: int, small: int) -> dict[str, tuple[int, str]]:
    """The tree, and its manifest: relative path -> (size, sha256)."""
    marker = src.parent / f"{src.name}.done-{big}-{small}"  # outside: not payload
    if big < 0:  # --one-file: made by generate_one
        marker = src.parent / f"{src.name}.done"
    if not marker.exists():
        shutil.rmtree(src, ignore_errors=True)
        for old in src.parent.glob(f"{src.name}.done-*"):
            old.unlink()
        rnd = random.Random(15)
        for i in range(big):
            path = src / f"big/b{i:02d}.img"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as fh:
                for _ in range(rnd.randint(8, 64)):
                    fh.write(os.urandom(MIB))
        for i in range(small):
            path = src / f"small/d{i % 10}/f{i:03d}.dat"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rnd.randbytes(rnd.randint(1, 64 * 1024)))
        marker.write_text("")
    manifest = {}
    for path in sorted(src.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                manifest[path.relative_to(src).as_posix()] = (
                    path.stat().st_size, hashlib.file_digest(fh, "sha256").hexdigest())
    return manifest


def start_server(data: Path, port: int, made: list[Host], log: Path) -> subprocess.Popen:
    """rclone serve s3 on 127.0.0.1 (for the bench's own checks) and on every host's
    root-side address."""
    data.mkdir(parents=True, exist_ok=True)
    rclone = shutil.which("rclone", path=str(Path(sys.executable).parent)) or "rclone"
    addrs = [arg for ip in ["127.0.0.1", *(h.root_ip for h in made)]
             for arg in ("--addr", f"{ip}:{port}")]
    proc = subprocess.Popen([rclone, "serve", "s3", *addrs, "--auth-key",
                             f"{ACCESS_KEY},{SECRET_KEY}", "--config", "/dev/null",
                             "--log-level", "NOTICE", str(data)],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    from journalsync.devtools.localserver import wait_for_port

    wait_for_port(port, proc=proc)
    return proc


def client(port: int):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}",
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                        region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"},
                                      request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required"))


def bucket_equals(s3, bucket: str, manifest: dict[str, tuple[int, str]]) -> str:
    """'ok', or what differs: keys, sizes and sha256 metadata against the source's."""
    from journalsync.objectmeta import metadata_sha256

    got = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            got[obj["Key"]] = obj["Size"]
    missing, extra = manifest.keys() - got.keys(), got.keys() - manifest.keys()
    wrong = [k for k in manifest.keys() & got.keys() if got[k] != manifest[k][0] or
             metadata_sha256(s3.head_object(Bucket=bucket, Key=k)["Metadata"]) != manifest[k][1]]
    if missing or extra or wrong:
        return f"MISMATCH missing={len(missing)} extra={len(extra)} wrong={len(wrong)}"
    return "ok"


@dataclass
class Result:
    hosts: int
    rep: int
    seconds: float
    wire: float
    bucket: str
    codes: list[int]
    chunks_by_host: dict[str, int]
    units_by_host: dict[str, int]


def journal_url(pg_url: str, host: Host, pg_port: int) -> str:
    url = urlsplit(pg_url)
    ip, port = host.address(pg_port)
    return urlunsplit(url._replace(netloc=f"{url.username}@{ip}:{port}"))


def pg_rows(pg_url: str, job: str, sql: str) -> list[tuple]:
    import psycopg

    try:
        with psycopg.connect(pg_url, options=f"-c search_path={job}", autocommit=True) as db:
            return [tuple(r) for r in db.execute(sql).fetchall()]
    except psycopg.errors.UndefinedTable:
        return []


def one_run(n: int, rep: int, made: list[Host], src: Path, pg_url: str, pg_port: int,
            s3_port: int, manifest, payload: int, args, log) -> Result:
    bucket, job = f"hosts{n}-{rep}-{uuid.uuid4().hex[:6]}", f"bench_{uuid.uuid4().hex[:10]}"
    s3 = client(s3_port)
    s3.create_bucket(Bucket=bucket)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE="/dev/null",
               AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_EC2_METADATA_DISABLED="true",
               XDG_STATE_HOME=str(WORK / "state"))
    used = made[:n]
    common = ("--job", job, "--workers", str(args.workers))
    if args.log_dir:
        common += ("-v",)
    if args.one_file:
        common += ("--part-unit", args.part_unit)
    extra = ("--large-files", "prehash") if args.one_file else ()

    def start(host: Host, *cmd: str) -> subprocess.Popen:
        log.write(f"\n### {n} hosts rep {rep} {host.ns}: {' '.join(cmd)}\n".encode())
        log.flush()
        out = open(f"{args.log_dir}/{n}-{rep}-{host.ns}.log", "ab") if args.log_dir else log
        return subprocess.Popen([*host.exec_args(), JOURNALSYNC, *cmd], env=env, stdout=out,
                                stderr=out, stdin=subprocess.DEVNULL)

    standing: list[subprocess.Popen] = []
    if args.standing and n > 1:
        # Workers already up on their hosts (`worker --follow`, as a deployment keeps them):
        # started before the clock, so the run's wall holds no worker's start-up.
        standing = [start(h, "worker", "--follow", "--journal", journal_url(pg_url, h, pg_port),
                          "--endpoint-url", f"http://{h.root_ip}:{s3_port}", *common)
                    for h in used[1:]]
        time.sleep(args.standing)
    tx = [h.tx_bytes() for h in used]
    started = time.monotonic()
    stop_timeline = threading.Event()
    sampler = threading.Thread(target=timeline, args=(used, stop_timeline, args.timeline),
                               daemon=True) if args.timeline else None
    if sampler:
        sampler.start()
    procs = [start(used[0], "run", str(src), f"s3://{bucket}", "--journal",
                   journal_url(pg_url, used[0], pg_port), "--endpoint-url",
                   f"http://{used[0].root_ip}:{s3_port}", "--chunk-bytes", args.chunk_bytes,
                   *common, *extra)]
    try:
        if n > 1 and not standing:
            while not pg_rows(pg_url, job, "SELECT 1 FROM chunks LIMIT 1"):
                if procs[0].poll() is not None:
                    break
                time.sleep(0.05)
            procs += [start(h, "worker", "--journal", journal_url(pg_url, h, pg_port),
                            "--endpoint-url", f"http://{h.root_ip}:{s3_port}", *common)
                      for h in used[1:]]
        deadline = started + args.cap
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        seconds = time.monotonic() - started
        for proc in standing:  # the run is done: nothing of it is left to them
            proc.terminate()
            stopped = proc.wait(30)
            codes.append(0 if stopped == 143 else stopped)  # 143: stopped by our SIGTERM
    finally:
        for proc in standing:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stop_timeline.set()
        if sampler:
            sampler.join()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wire = sum(h.tx_bytes() - before for h, before in zip(used, tx)) / payload
    by_host = dict(pg_rows(pg_url, job, "SELECT host, sum(chunks_done) FROM workers GROUP BY host"
                           " ORDER BY host"))
    units = dict(pg_rows(pg_url, job, "SELECT w.host, count(*) FROM part_units u JOIN workers w"
                                      " ON w.id = u.owner GROUP BY w.host ORDER BY w.host"))
    check = bucket_equals(s3, bucket, manifest)
    shutil.rmtree(WORK / "s3" / bucket, ignore_errors=True)  # the disk holds a few, not 9
    return Result(n, rep, seconds, wire, check, codes, {k: int(v) for k, v in by_host.items()},
                  {k: int(v) for k, v in units.items()})


def timeline(used: list[Host], stop: threading.Event, step: float) -> None:
    """Print, per host, the bytes it sent over its link (the root side's rx), one digit per
    `step` seconds: 0 idle to 9 the link's full rate (estimated as the best step seen), so
    a host idle at the start or the end of a run shows as a run of zeros."""
    rx = [Path(f"/sys/class/net/{h.root_if}/statistics/rx_bytes") for h in used]
    samples = []
    while not stop.wait(step):
        samples.append([int(p.read_text()) for p in rx])
    if len(samples) < 2:
        return
    deltas = [[b - a for a, b in zip(s0, s1)] for s0, s1 in zip(samples, samples[1:])]
    best = max(max(d) for d in deltas) or 1
    for i, host in enumerate(used):
        line = "".join(str(min(9, round(9 * d[i] / best))) for d in deltas)
        print(f"  {host.ns:8} {line}", flush=True)


def table(results: list[Result], payload: int) -> str:
    lines = ["| hosts | wall (median) | runs | MiB/s | efficiency | wire / payload | bucket |"
             " exit codes |", "|---|---|---|---|---|---|---|---|"]
    rate = {}
    for n in dict.fromkeys(r.hosts for r in results):
        rs = [r for r in results if r.hosts == n]
        wall = statistics.median(r.seconds for r in rs)
        rate[n] = payload / wall
        eff = rate[n] / (n * rate[1]) if 1 in rate else float("nan")
        lines.append(
            f"| {n} | {wall:.1f} s | {', '.join(f'{r.seconds:.1f}' for r in rs)} | "
            f"{rate[n] / MIB:.2f} | {eff:.2f} | {statistics.median(r.wire for r in rs):.3f} | "
            f"{'ok' if all(r.bucket == 'ok' for r in rs) else 'MISMATCH'} | "
            f"{sorted({c for r in rs for c in r.codes})} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,2,4", help="host counts to run, e.g. 1,2,4")
    parser.add_argument("--reps", type=int, default=3, help="runs per host count (medians)")
    parser.add_argument("--rate", default="50mbit", help="tbf cap of each host's uplink")
    parser.add_argument("--big", type=int, default=14, help="files of 8-64 MiB")
    parser.add_argument("--small", type=int, default=200, help="files of at most 64 KiB")
    parser.add_argument("--chunk-bytes", default="64MiB")
    parser.add_argument("--workers", type=int, default=8, help="transfers per host")
    parser.add_argument("--cap", type=float, default=600, help="seconds before a run is stopped")
    parser.add_argument("--one-file", default=None, help="the tree is one file of this size "
                        "(e.g. 1GiB), its parts shared by the hosts")
    parser.add_argument("--part-unit", default="64MiB", help="with --one-file: bytes per unit")
    parser.add_argument("--standing", type=float, default=0, help="start the workers with "
                        "--follow this many seconds before the run (and the clock), as standing "
                        "workers; 0: start them once the run's chunks exist (their start-up "
                        "inside the wall)")
    parser.add_argument("--log-dir", default=None, help="each process's -v log under here")
    parser.add_argument("--timeline", type=float, default=0, help="print each host's link use, "
                        "one digit per this many seconds (0: off)")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"bench/hosts.py: skipped: {reason}")
        return
    from journalsync.devtools.localserver import free_port
    from tests.support.pg import fresh_database

    counts = [int(n) for n in args.hosts.split(",")]
    WORK.mkdir(exist_ok=True)
    if args.one_file:
        from journalsync.config import parse_size

        tree = WORK / f"one-{args.one_file}"
        generate_one(tree, parse_size(args.one_file))
        manifest = generate(tree, -1, 0)
    else:
        tree = WORK / "tree"
        manifest = generate(tree, args.big, args.small)
    payload = sum(size for size, _ in manifest.values())
    shutil.rmtree(WORK / "s3", ignore_errors=True)
    results: list[Result] = []
    with fresh_database() as pg_url:
        pg_port = urlsplit(pg_url).port or 5432
        with hosts(max(counts), [pg_port], rate=args.rate, prefix=PREFIX, slot=SLOT) as made, \
                open(WORK / "tools.log", "wb") as log:
            s3_port = free_port()
            server = start_server(WORK / "s3", s3_port, made, WORK / "rclone.log")
            try:
                print(f"payload {payload / MIB:.0f} MiB in {len(manifest)} files; each host "
                      f"capped at {args.rate}; {os.cpu_count()} cores", flush=True)
                for rep in range(1, args.reps + 1):
                    for n in counts:
                        r = one_run(n, rep, made, tree, pg_url, pg_port, s3_port,
                                    manifest, payload, args, log)
                        results.append(r)
                        print(f"{n} host(s) rep {rep}: {r.seconds:.1f} s "
                              f"{payload / r.seconds / MIB:.2f} MiB/s wire={r.wire:.3f} "
                              f"bucket={r.bucket} exit={r.codes} chunks={r.chunks_by_host} "
                              f"part units={r.units_by_host}",
                              flush=True)
            finally:
                server.terminate()
                server.wait()
    print(f"\nMeasured on {machine()}, `sudo .venv/bin/python bench/hosts.py "
          f"{' '.join(sys.argv[1:])}` (payload {payload / MIB:.0f} MiB in {len(manifest)} "
          f"files, each host capped at {args.rate}, chunks of at most {args.chunk_bytes}, "
          f"{args.workers} transfers per host, medians of {args.reps}; host 1 runs `run`, "
          f"the others `worker`):\n\n" + table(results, payload))


if __name__ == "__main__":
    main()
