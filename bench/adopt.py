"""The "adopt" phase of `make bench`: journalsync's first run over a bucket another tool filled.

For each peer (aws s3 sync, rclone sync, s5cmd sync) the peer fills its own bucket with the
many-small tree plus the large-file tree, at its default settings. Then, every request
passing through one recording proxy (tests/support/proxy.py) so each tool's requests and
bytes are counted the same way:

- the peer's own no-op on its bucket;
- journalsync's first run over it, with a new journal (what a user switching tools runs);
- journalsync's second run (its no-op).

The target (issue 13): 0 object bytes sent by the first run; its wall time at most
journalsync's own initial scan with hashing plus its no-op. The reference is a `--dry-run`
with a new journal over an empty bucket (scan, LIST, plan, send nothing) plus the time to
SHA-256 every file on 4 threads, as the scan did before it hashed lazily: since then a dry
run into an empty bucket reads no file, so the hashing is timed on its own.
HEADs only for objects the ETag could not prove. Every bucket is checked against the source
(keys, sizes, MD5) afterwards.

    python bench/adopt.py [--quick] [--readme]     (or: make bench-adopt BENCH_ARGS=--quick)
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench import BIN, TREES, peer_command, QUICK, Tree, check_buckets, generate, machine, timed, tool_env, update_readme  # noqa: E402
from journalsync.devtools.localserver import RcloneS3Server  # noqa: E402
from tests.support.proxy import RecordingProxy  # noqa: E402

WORK = ROOT / ".bench-adopt"
PEERS = ("aws", "rclone", "s5cmd")
SENDING = ("PutObject", "UploadPart")


@dataclass
class Step:
    peer: str
    what: str
    seconds: float
    rss_mb: float
    exit_code: int
    requests: int
    heads: int
    puts: int  # PutObject + UploadPart requests
    bytes_sent: int  # bodies of those requests
    summary: str = ""


def adopt_tree(quick: bool) -> Tree:
    """The many-small tree plus the large-file tree, in one source."""
    small, large = (QUICK if quick else TREES)["small"], (QUICK if quick else TREES)["large"]
    return Tree("adopt", small.files, small.max_size, small.dirs,
                big_files=large.big_files, big_size=large.big_size)


def env_for(server, endpoint: str) -> dict[str, str]:
    env = tool_env(server)
    for key in [k for k in env if k.startswith("RCLONE_CONFIG_BENCH_")]:
        env[key.replace("_BENCH_", "_ADOPT_")] = env.pop(key)
    env["RCLONE_CONFIG_ADOPT_ENDPOINT"] = endpoint
    return env


def measured(peer: str, what: str, cmd: list[str], env: dict, proxy: RecordingProxy, cap: float,
             log) -> Step:
    proxy.clear()
    log.write(f"\n### {what} ({peer})\n")
    log.flush()
    secs, rss, code, capped = timed(cmd, env, cap, log)
    ops = proxy.operations()
    sent = sum(r.size for r in proxy.requests if r.operation in SENDING)
    step = Step(peer, what, secs, rss, -9 if capped else code, sum(ops.values()),
                ops["HeadObject"], sum(ops[o] for o in SENDING), sent)
    print(f"{peer:7} {what:34} {secs:7.2f}s {rss:6.0f} MB exit={step.exit_code} "
          f"requests={step.requests} HEAD={step.heads} PUT/part={step.puts} "
          f"sent={sent / 2**20:.1f} MiB", flush=True)
    return step


def hash_all(root: Path) -> Step:
    """The hashing the scan used to do before the plan: SHA-256 of every file, 4 threads."""
    def one(path: Path) -> None:
        with open(path, "rb") as fh:
            hashlib.file_digest(fh, "sha256")

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, (p for p in root.rglob("*") if p.is_file())))
    step = Step("-", "SHA-256 of every file, 4 threads", time.monotonic() - started, 0, 0, 0, 0, 0, 0)
    print(f"{'-':7} {step.what:34} {step.seconds:7.2f}s", flush=True)
    return step


def last_summary(log_path: Path) -> str:
    lines = [ln for ln in log_path.read_text().splitlines() if re.search(r"\buploaded=", ln)]
    return lines[-1].strip() if lines else ""


def journalsync_cmd(src: Path, bucket: str, endpoint: str, journal: Path, *extra: str) -> list[str]:
    return [str(BIN / "journalsync"), "run", str(src), f"s3://{bucket}", "--endpoint-url",
            endpoint, "--journal", str(journal), *extra]


def run(quick: bool, cap: float) -> tuple[list[Step], dict, Tree]:
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "journals").mkdir(parents=True)
    tree = adopt_tree(quick)
    src = WORK / "tree"
    print(f"== adopt: generating {tree.files} files + {tree.big_files} x "
          f"{tree.big_size >> 20} MiB", flush=True)
    generate(tree, src)
    steps: list[Step] = []
    checks: dict = {}
    log_path = WORK / "adopt.log"
    with RcloneS3Server(WORK / "s3", log_file=WORK / "rclone-server.log") as server, \
            RecordingProxy(server.port) as proxy, open(log_path, "w") as log:
        print(f"rclone serve s3 at {server.endpoint_url}, proxy at {proxy.endpoint_url}; "
              f"{machine()}", flush=True)
        env = env_for(server, proxy.endpoint_url)
        direct = env_for(server, server.endpoint_url)
        server.create_bucket("reference")
        steps.append(measured("-", "journalsync --dry-run, new journal (scan+LIST)",
                              journalsync_cmd(src, "reference", proxy.endpoint_url,
                                              WORK / "journals" / "reference.sqlite", "--dry-run"),
                              env, proxy, cap, log))
        steps.append(hash_all(src))
        for peer in PEERS:
            bucket = f"adopt-{peer}"
            server.create_bucket(bucket)
            secs, _, code, _ = timed(peer_command(peer, src, bucket, server.endpoint_url, remote="adopt"), direct,
                                     cap * 4, log)
            print(f"{peer:7} {'fills its bucket (not measured)':34} {secs:7.2f}s exit={code}",
                  flush=True)
            if code != 0:
                raise SystemExit(f"{peer} could not fill {bucket}: exit {code}; see {log_path}")
            steps.append(measured(peer, "peer's own no-op",
                                  peer_command(peer, src, bucket, proxy.endpoint_url, remote="adopt"), env, proxy,
                                  cap, log))
            journal = WORK / "journals" / f"{peer}.sqlite"
            for what in ("journalsync first run (adopt)", "journalsync second run (no-op)"):
                log.flush()
                step = measured(peer, what, journalsync_cmd(src, bucket, proxy.endpoint_url, journal),
                                env, proxy, cap, log)
                log.flush()
                step.summary = last_summary(log_path)
                steps.append(step)
        # check_buckets names a bucket f"{tool}-{tree}": here tool "adopt", tree the peer.
        checks["adopt"] = {peer: check_buckets(server, peer, src, ("adopt",))["adopt"]
                           for peer in PEERS}
    return steps, checks, tree


def table(steps: list[Step], checks: dict, tree: Tree) -> str:
    dry = next(s for s in steps if s.peer == "-" and "dry-run" in s.what)
    hashing = next(s for s in steps if s.peer == "-" and "SHA-256" in s.what)
    ref_seconds = dry.seconds + hashing.seconds
    payload = tree.files * (tree.max_size + 1) // 2 + tree.big_files * tree.big_size
    lines = [f"Tree: {tree.files:,} files of 1 B–{tree.max_size // 1024} KiB + {tree.big_files} x "
             f"{tree.big_size >> 20} MiB (~{payload / 2**20:,.0f} MiB), each peer's default "
             f"settings, page cache warm. Reference: journalsync `--dry-run` with a new journal "
             f"(scan, LIST, plan) {dry.seconds:.1f}s + SHA-256 of every file {hashing.seconds:.1f}s "
             f"= {ref_seconds:.1f}s.", "",
             "| bucket filled by | peer's no-op | journalsync first run | bytes sent | HEADs | "
             "PUT/UploadPart | journalsync no-op | first run ÷ (reference + no-op) |",
             "|---|---|---|---|---|---|---|---|"]
    for peer in PEERS:
        own = next(s for s in steps if s.peer == peer and s.what == "peer's own no-op")
        first = next(s for s in steps if s.peer == peer and "first" in s.what)
        noop = next(s for s in steps if s.peer == peer and "second" in s.what)
        flag = "" if first.exit_code == 0 else f" (exit {first.exit_code})"
        lines.append(f"| {peer} | {own.seconds:.1f}s, {own.heads} HEAD | {first.seconds:.1f}s{flag} | "
                     f"{first.bytes_sent:,} | {first.heads:,} | {first.puts:,} | {noop.seconds:.1f}s | "
                     f"{first.seconds / (ref_seconds + noop.seconds):.2f} |")
    lines.append("")
    for peer in PEERS:
        first = next(s for s in steps if s.peer == peer and "first" in s.what)
        lines.append(f"- {peer}: first run said `{first.summary}`")
    lines.append("- bucket check: " + ", ".join(f"{p} {v}" for p, v in checks["adopt"].items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small trees, for trying the script")
    parser.add_argument("--cap", type=float, default=900, help="seconds before a run is stopped")
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    steps, checks, tree = run(args.quick, args.cap)
    text = f"Measured on {machine()}, one local `rclone serve s3`, `make bench-adopt`:\n\n" \
        + table(steps, checks, tree)
    print("\n" + text)
    if args.readme:
        update_readme(text, "bench-adopt")
    if any("MISMATCH" in v for v in checks["adopt"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
