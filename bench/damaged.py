"""Bodies damaged on the way: what each tool lets the store keep. journalsync, aws s3 sync,
rclone sync and s5cmd sync side by side, default settings, one local `rclone serve s3`.

Every request passes through one proxy (tests/support/proxy.py) that flips one bit in the
middle of every --every-th request body it forwards (PutObject and UploadPart: the bytes of
a file), as a faulty NIC, a bad cable or a buggy middlebox would. A body the tool sent with
an end-to-end check the store verifies is refused (400 BadDigest) and sent again; a body
with no check, or one this store does not verify, is kept as it arrived. `rclone serve s3`
verifies Content-MD5 and nothing else (x-amz-checksum-* and the signed payload hash are
stored or ignored unchecked): that is why journalsync sends Content-MD5 to it, and the
cost of that MD5, one CPU-second per 544 MB on each side, is part of the large-file row of
`make bench`.

Then each tool syncs the same tree again, with nothing damaged: does it notice the object
it left damaged? (A sync that compares size and mtime does not.) Every object is read back
from the server itself, not through the proxy, and compared byte for byte with its file.

    python bench/damaged.py [--every 3] [--readme]     (or: make bench-damaged)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench import BIN, TOOLS, machine, peer_command, timed, tool_env, update_readme  # noqa: E402
from journalsync.devtools.localserver import RcloneS3Server  # noqa: E402
from tests.support.proxy import Fault, RecordingProxy  # noqa: E402

WORK = ROOT / ".bench-damaged"
SENDING = ("PutObject", "UploadPart")
MiB = 1 << 20


@dataclass
class Outcome:
    tool: str
    seconds: float
    exit_code: int
    bodies: int  # PutObject + UploadPart requests with a body
    flipped: int
    refused: int  # damaged bodies the store answered 4xx (BadDigest; NoSuchUpload for a
    # part of an upload it had dropped already)
    damaged: int  # objects whose bytes differ from their file after the first sync
    missing: int
    damaged_after: int  # ... and after the second sync
    again_code: int


def make_tree(root: Path) -> None:
    """40 files of 64 KiB to 1 MiB (single PUTs for every tool) and 2 of 24 MiB (multipart
    for journalsync and aws, 8 MiB parts; a single PUT for rclone and s5cmd)."""
    rng = random.Random("damaged")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for i in range(40):
        (root / f"f{i:03d}.bin").write_bytes(rng.randbytes(rng.randint(64 << 10, MiB)))
    for i in range(2):
        (root / f"big{i}.bin").write_bytes(rng.randbytes(24 * MiB))


def compare(client, bucket: str, src: Path) -> tuple[int, int]:
    """(objects whose bytes differ from their file, files with no object), read back from
    the server directly."""
    damaged = missing = 0
    for path in sorted(src.iterdir()):
        try:
            body = client.get_object(Bucket=bucket, Key=path.name)["Body"].read()
        except client.exceptions.NoSuchKey:
            missing += 1
            continue
        if hashlib.sha256(body).digest() != hashlib.sha256(path.read_bytes()).digest():
            damaged += 1
    return damaged, missing


def command(tool: str, src: Path, bucket: str, endpoint: str) -> list[str]:
    if tool == "journalsync":
        return [str(BIN / "journalsync"), "run", str(src), f"s3://{bucket}", "--endpoint-url",
                endpoint, "--journal", str(WORK / f"{bucket}.sqlite")]
    return peer_command(tool, src, bucket, endpoint)


def run_tool(tool: str, src: Path, server, every: int, cap: float, log) -> Outcome:
    state = {"n": 0, "on": True}
    flipped: list = []  # the very requests damaged (a resend is an equal Request)
    lock = threading.Lock()

    def hook(req):
        if req.operation not in SENDING or not req.size:
            return None
        with lock:
            state["n"] += 1
            flip = state["on"] and state["n"] % every == 1 % every
            if flip:
                flipped.append(req)
        return Fault(status=0, flip=True) if flip else None

    bucket = f"{tool}-damaged"
    server.create_bucket(bucket)
    with RecordingProxy(server.port, hook=hook) as proxy:
        env = tool_env(server)
        env["RCLONE_CONFIG_BENCH_ENDPOINT"] = proxy.endpoint_url
        cmd = command(tool, src, bucket, proxy.endpoint_url)
        log.write(f"\n### {tool} (1 body in {every} damaged)\n")
        log.flush()
        secs, _, code, _ = timed(cmd, env, cap, log)
        sent = [a for a in proxy.answers if a.request.operation in SENDING and a.request.size]
        bodies = len(sent)
        ids = {id(req) for req in flipped}
        refused = sum(1 for a in sent if id(a.request) in ids and 400 <= a.status < 500)
        damaged, missing = compare(server.client(), bucket, src)
        state["on"] = False
        log.write(f"\n### {tool} again (nothing damaged)\n")
        log.flush()
        _, _, again, _ = timed(cmd, env, cap, log)
    damaged_after, _ = compare(server.client(), bucket, src)
    return Outcome(tool, secs, code, bodies, len(flipped), refused, damaged, missing, damaged_after, again)


def table(outcomes: list[Outcome], every: int) -> str:
    lines = [f"Measured on {machine()}, one local `rclone serve s3` behind a proxy that flips one "
             f"bit in 1 of every {every} file bodies (PutObject, UploadPart), default settings "
             "for every tool, `make bench-damaged`:", "",
             "| tool | exit | bodies sent | damaged in transit | damaged and refused by the store | "
             "objects stored damaged | after a clean second sync |",
             "|---|---|---|---|---|---|---|"]
    for o in outcomes:
        lines.append(f"| {o.tool} | {o.exit_code} | {o.bodies} | {o.flipped} | {o.refused} | "
                     f"{o.damaged} of 42{f' ({o.missing} missing)' if o.missing else ''} | "
                     f"{o.damaged_after} damaged (exit {o.again_code}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=3, help="damage 1 body in this many")
    parser.add_argument("--cap", type=float, default=300, help="seconds before a run is stopped")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    src = WORK / "tree"
    make_tree(src)
    outcomes = []
    with RcloneS3Server(WORK / "s3", log_file=WORK / "rclone-server.log") as server, \
            open(WORK / "damaged.log", "w") as log:
        for tool in args.tools.split(","):
            started = time.monotonic()
            outcome = run_tool(tool, src, server, args.every, args.cap, log)
            outcomes.append(outcome)
            print(f"{tool:12} exit={outcome.exit_code} bodies={outcome.bodies} "
                  f"refused={outcome.refused} stored damaged={outcome.damaged} "
                  f"missing={outcome.missing} after again={outcome.damaged_after} "
                  f"({time.monotonic() - started:.1f}s)", flush=True)
    text = table(outcomes, args.every)
    print(text)
    if args.readme:
        update_readme(text, "bench-damaged")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
