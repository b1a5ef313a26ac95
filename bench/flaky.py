"""The flaky-link bench (issue 14): journalsync, `aws s3 sync`, `rclone sync` and `s5cmd sync`
over a real link that drops.

Two network namespaces (`jsb-cli`, `jsb-srv`) joined by a veth pair; `tc tbf` caps the
client -> server direction at 200 Mbit/s; `rclone serve s3` runs in the server namespace and
each tool in the client namespace. Payload: 300 small files + 3 x 96 MiB (297 MiB).

Scenarios:
  a  the link drops 4 s in every 8 s (`ip link set <veth> down`/`up` from a flapper thread,
     starting with 4 s up when the tool starts). --flap-side server (the default) sets the
     server's end down: the client keeps its route and its packets are lost, and every
     tool's TCP resumes within ~0.2 s of the link's return (this reproduces the figures in
     issue 14). --flap-side client sets the client's end down: its route goes too, the
     kernel's retransmission timer backs off while it is down, and a connection without
     journalsync's 1 s cap (clients.py) resumes 3 s to tens of seconds after the link.
  b  up 12 s, down 20 s, over and over
  c  no flaps: SIGKILL the tool once 60% of the payload has crossed the wire, then run the
     same command again to the end

For each run: wall seconds (for c: both runs together), wire bytes / payload (tx_bytes of
the client's veth, which counts a GSO segment once, so TCP/IP headers add ~0.1%),
incomplete multipart uploads left (ListMultipartUploads), and whether the bucket equals the
source (keys, sizes, MD5 = the ETag `rclone serve s3` computes). Medians over --reps for a
and b, then ratios to the fastest peer.

    sudo .venv/bin/python bench/flaky.py [--scenarios a,b,c] [--reps 3] [--tools ...] [--cap 240]
        [--flap-side server|client] [--base CHECKOUT] [--prefix jsb]

--base runs another checkout's journalsync as the tool `base` (before and after, side by
side). Each run's tx bytes are sampled every 50 ms into .bench-flaky/PREFIX/timelines/ with
the flaps, so the idle gap after each return of the link can be read off.

Root only (namespaces, tc); elsewhere it prints one line and exits 0. Every namespace it
makes is named jsb-*, removed at the end and also at start (leftovers of a killed run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from bench import machine, peer_command, update_readme  # noqa: E402

BIN = Path(sys.executable).parent
TOOLS = ("journalsync", "aws", "rclone", "s5cmd")
BASE = ""  # --base: a checkout whose journalsync runs as the tool "base"
WORK = ROOT / ".bench-flaky" / "jsb"
CLI_NS, SRV_NS = "jsb-cli", "jsb-srv"
CLI_IF, SRV_IF = "jsb-c", "jsb-s"


def use_prefix(prefix: str) -> None:
    """Names (namespaces, veths, work folder) from `prefix`, so two benches can run at once."""
    global WORK, CLI_NS, SRV_NS, CLI_IF, SRV_IF
    WORK = ROOT / ".bench-flaky" / prefix
    CLI_NS, SRV_NS, CLI_IF, SRV_IF = (f"{prefix}-cli", f"{prefix}-srv", f"{prefix}-c", f"{prefix}-s")

CLI_IP, SRV_IP = "10.77.14.1", "10.77.14.2"
PORT = 9014
ACCESS_KEY, SECRET_KEY = "flaky-bench", "flaky-bench-secret"
RATE = "200mbit"
SMALL_FILES, BIG_FILES, BIG_SIZE = 300, 3, 96 << 20
FLAPS = {"a": (4.0, 4.0), "b": (12.0, 20.0)}  # (up, down) seconds
KILL_AT = 0.60


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


# ---------------------------------------------------------------- the link


def cleanup_link() -> None:
    """Remove this bench's namespaces (its veth end goes with each, and the peer with that)
    and whatever runs in them."""
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name in (CLI_NS, SRV_NS):
            for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", name, check=False)
    sh("ip", "link", "del", CLI_IF, check=False)  # a veth left in the root namespace


def make_link() -> None:
    cleanup_link()
    sh("ip", "netns", "add", CLI_NS)
    sh("ip", "netns", "add", SRV_NS)
    sh("ip", "link", "add", CLI_IF, "type", "veth", "peer", "name", SRV_IF)
    sh("ip", "link", "set", CLI_IF, "netns", CLI_NS)
    sh("ip", "link", "set", SRV_IF, "netns", SRV_NS)
    for ns, dev, ip in ((CLI_NS, CLI_IF, CLI_IP), (SRV_NS, SRV_IF, SRV_IP)):
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    # client -> server only: the uplink the tools send their bodies over
    sh("ip", "netns", "exec", CLI_NS, "tc", "qdisc", "add", "dev", CLI_IF, "root", "tbf",
       "rate", RATE, "burst", "256kb", "latency", "50ms")


FLAP_SIDE = "server"  # --flap-side: whose end of the veth goes down


def link(up: bool) -> None:
    """Set the flapped end up or down. The client's end down also takes the client's route
    away (connects fail at once, retransmissions fail locally); the server's end down leaves
    the client a route over a link without carrier (its packets are lost silently)."""
    ns, dev = (CLI_NS, CLI_IF) if FLAP_SIDE == "client" else (SRV_NS, SRV_IF)
    sh("ip", "-n", ns, "link", "set", dev, "up" if up else "down", check=False)


def tx_bytes() -> int:
    out = sh("ip", "netns", "exec", CLI_NS, "cat", f"/sys/class/net/{CLI_IF}/statistics/tx_bytes")
    return int(out.stdout)


class Flapper(threading.Thread):
    """Up for `up` s, down for `down` s, over and over, until stopped (then left up)."""

    def __init__(self, up: float, down: float):
        super().__init__(daemon=True)
        self.up_s, self.down_s = up, down
        self.stopped = threading.Event()
        self.flaps = 0
        self.events: list = []

    def run(self) -> None:
        while not self.stopped.wait(self.up_s):
            link(False)
            self.events.append((round(time.monotonic(), 2), "down"))
            self.flaps += 1
            if self.stopped.wait(self.down_s):
                break
            link(True)
            self.events.append((round(time.monotonic(), 2), "up"))
        link(True)

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        link(True)


# ---------------------------------------------------------------- the server side


def admin(action: str, *args: str) -> dict:
    """Run an admin action (bucket create/check/drop) inside the server namespace, against
    127.0.0.1 there, so none of its bytes cross the measured link."""
    out = subprocess.run(["ip", "netns", "exec", SRV_NS, sys.executable, __file__, "--prefix",
                          CLI_NS[:-4], "--admin", action, *args], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"admin {action} {args} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)


def _client():
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{PORT}", aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"},
                                      request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required"))


def admin_main(action: str, args: list[str]) -> None:
    try:
        _admin(action, args)
    except Exception as exc:  # noqa: BLE001 - reported in the table, not a crash of the bench
        print(json.dumps({"incomplete": -1, "ok": False, "detail": f"{type(exc).__name__}: {exc}"}))


def _admin(action: str, args: list[str]) -> None:
    client = _client()
    if action == "create":
        client.create_bucket(Bucket=args[0])
        print("{}")
        return
    bucket, manifest = args[0], json.loads(Path(args[1]).read_text())
    got = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            got[obj["Key"]] = [obj["Size"], obj["ETag"].strip('"')]
    try:
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    except client.exceptions.NoSuchUpload:  # rclone serve s3's answer for a bucket without any
        uploads = []
    missing = len(manifest.keys() - got.keys())
    extra = len(got.keys() - manifest.keys())
    wrong = sum(1 for k in manifest.keys() & got.keys() if got[k] != manifest[k])
    print(json.dumps({"incomplete": len(uploads), "ok": not (missing or extra or wrong),
                      "detail": f"missing={missing} extra={extra} wrong={wrong}"}))


def start_server(data: Path, log: Path) -> subprocess.Popen:
    data.mkdir(parents=True, exist_ok=True)
    rclone = shutil.which("rclone", path=str(BIN)) or shutil.which("rclone")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", SRV_NS, rclone, "serve", "s3", "--addr", f"0.0.0.0:{PORT}",
         "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", "--config", "/dev/null",
         "--log-level", "NOTICE", str(data)],
        stdout=open(log, "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    for _ in range(200):
        ok = subprocess.run(["ip", "netns", "exec", SRV_NS, "bash", "-c",
                             f"exec 3<>/dev/tcp/127.0.0.1/{PORT}"], capture_output=True)
        if ok.returncode == 0:
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("rclone serve s3 did not start in the server namespace")


# ---------------------------------------------------------------- tools


def generate(src: Path) -> dict[str, list]:
    """The payload, and its manifest: key -> [size, md5]."""
    if not (src / ".done").exists():
        shutil.rmtree(src, ignore_errors=True)
        rnd = random.Random(14)
        for i in range(SMALL_FILES):
            path = src / f"small/d{i % 10}/f{i:03d}.dat"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rnd.randbytes(rnd.randint(1, 64 * 1024)))
        for i in range(BIG_FILES):
            with open(src / f"big{i}.img", "wb") as fh:
                for _ in range(BIG_SIZE >> 20):
                    fh.write(os.urandom(1 << 20))
        (src / ".done").write_text("")
    manifest = {}
    for path in sorted(src.rglob("*")):
        if path.is_file() and path.name != ".done":
            with open(path, "rb") as fh:
                manifest[path.relative_to(src).as_posix()] = [
                    path.stat().st_size, hashlib.file_digest(fh, "md5").hexdigest()]
    (src / ".done").unlink()  # not part of the payload while tools run
    return manifest


def command(tool: str, src: Path, bucket: str, journal: Path, extra: list[str]) -> list[str]:
    endpoint = f"http://{SRV_IP}:{PORT}"
    if tool == "base":  # journalsync from another checkout (--base): before and after, side by side
        return [sys.executable, "-m", "journalsync", "run", str(src), f"s3://{bucket}", "--endpoint-url",
                endpoint, "--journal", str(journal), "--resume", *extra]
    if tool == "journalsync":
        return [str(BIN / "journalsync"), "run", str(src), f"s3://{bucket}", "--endpoint-url",
                endpoint, "--journal", str(journal), "--resume", *extra]
    return peer_command(tool, src, bucket, endpoint)


def tool_env(tool: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE="/dev/null",
               AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_EC2_METADATA_DISABLED="true",
               RCLONE_CONFIG_BENCH_TYPE="s3", RCLONE_CONFIG_BENCH_PROVIDER="Rclone",
               RCLONE_CONFIG_BENCH_ENDPOINT=f"http://{SRV_IP}:{PORT}",
               RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=ACCESS_KEY,
               RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=SECRET_KEY,
               XDG_STATE_HOME=str(WORK / "state"))
    if tool == "base":  # only this tool: the others (journalsync itself, aws) import their own
        env["PYTHONPATH"] = BASE
    return env


def run_tool(cmd: list[str], env: dict[str, str], log, cap: float, kill_at_bytes: int | None = None,
             timeline: list | None = None) -> tuple[float, int, bool]:
    """Run cmd in the client namespace: (wall seconds, exit code, stopped early). With
    kill_at_bytes, SIGKILL it once that many bytes have left the client's veth. Appends
    (monotonic time, tx bytes) samples to `timeline`: the idle gaps after a flap show there."""
    base = tx_bytes()
    started = time.monotonic()
    proc = subprocess.Popen(["ip", "netns", "exec", CLI_NS, *cmd], env=env, stdout=log,
                            stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    stopped = False
    try:
        while proc.poll() is None:
            over_cap = time.monotonic() - started > cap
            sent = tx_bytes() - base
            if timeline is not None:
                timeline.append((round(time.monotonic(), 2), sent))
            if over_cap or (kill_at_bytes is not None and sent >= kill_at_bytes):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                stopped = True
                log.write(f"\n### {'capped' if over_cap else 'SIGKILL'} after "
                          f"{time.monotonic() - started:.1f}s\n".encode())
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return time.monotonic() - started, proc.returncode, stopped


@dataclass
class Result:
    scenario: str
    tool: str
    rep: int
    seconds: float
    wire: float  # tx bytes / payload
    incomplete: int
    ok: bool
    exit_code: int
    capped: bool
    flaps: int = 0


def one_run(scenario: str, tool: str, rep: int, src: Path, data: Path, manifest_file: Path,
            payload: int, cap: float, log, extra: list[str]) -> Result:
    bucket = f"{scenario}{rep}-{tool}"
    admin("create", bucket)
    journal = WORK / "journals" / f"{bucket}.sqlite"
    cmd = command(tool, src, bucket, journal, extra)
    log.write(f"\n### {scenario} rep {rep} {tool}: {' '.join(cmd)}\n".encode())
    log.flush()
    base = tx_bytes()
    flapper, timeline, env = None, [], tool_env(tool)
    if scenario in FLAPS:
        flapper = Flapper(*FLAPS[scenario])
        flapper.start()
    try:
        if scenario == "c":
            secs, code, killed = run_tool(cmd, env, log, cap, int(KILL_AT * payload), timeline)
            secs2, code, capped = run_tool(cmd, env, log, cap, timeline=timeline)
            secs += secs2
        else:
            secs, code, capped = run_tool(cmd, env, log, cap, timeline=timeline)
    finally:
        if flapper:
            flapper.stop()
    wire = (tx_bytes() - base) / payload
    (WORK / "timelines").mkdir(exist_ok=True)
    (WORK / "timelines" / f"{bucket}.json").write_text(json.dumps(
        {"samples": timeline, "flaps": flapper.events if flapper else []}))
    check = admin("check", bucket, str(manifest_file))
    if not check["ok"]:
        print(f"   {bucket}: {check['detail']}", flush=True)
    shutil.rmtree(data / bucket, ignore_errors=True)  # the disk holds a few buckets, not 40
    return Result(scenario, tool, rep, secs, wire, check["incomplete"], check["ok"], code, capped,
                  flapper.flaps if flapper else 0)


# ---------------------------------------------------------------- report


def table(results: list[Result]) -> str:
    lines = ["| scenario | tool | wall (median) | runs | wire / payload | incomplete uploads | bucket | ratio to fastest peer |",
             "|---|---|---|---|---|---|---|---|"]
    for scenario in dict.fromkeys(r.scenario for r in results):
        rows = {t: [r for r in results if r.scenario == scenario and r.tool == t] for t in ("base",) + TOOLS}
        medians = {t: statistics.median(r.seconds for r in rs) for t, rs in rows.items() if rs}
        good = {t: m for t, m in medians.items()
                if t not in ("journalsync", "base") and all(r.exit_code == 0 and r.ok and not r.capped for r in rows[t])}
        fastest = min(good.values()) if good else None
        for tool, rs in rows.items():
            if not rs:
                continue
            runs = ", ".join(f"{r.seconds:.1f}" + (" capped" if r.capped else "")
                             + (f" exit {r.exit_code}" if r.exit_code else "") for r in rs)
            ratio = f"{medians[tool] / fastest:.2f}x" if fastest else "-"
            lines.append(f"| {scenario} | {tool} | {medians[tool]:.1f}s | {runs} | "
                         f"{statistics.median(r.wire for r in rs):.3f} | "
                         f"{max(r.incomplete for r in rs)} | "
                         f"{'ok' if all(r.ok for r in rs) else 'MISMATCH'} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="a,b,c")
    parser.add_argument("--reps", type=int, default=3, help="runs of a and b (c runs once)")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--cap", type=float, default=240, help="seconds before a tool run is stopped")
    parser.add_argument("--journalsync-args", default="", help="extra args for journalsync run")
    parser.add_argument("--base", default="", help="a checkout of journalsync to run as the tool `base`")
    parser.add_argument("--flap-side", choices=("client", "server"), default="server",
                        help="which end of the veth the flapper sets down")
    parser.add_argument("--prefix", default="jsb", help="names of the namespaces and veths: PREFIX-*")
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    parser.add_argument("--admin", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    use_prefix(args.prefix)
    global BASE, FLAP_SIDE
    BASE, FLAP_SIDE = args.base, args.flap_side
    if args.admin:
        return admin_main(args.admin[0], args.admin[1:])
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        print("bench/flaky.py: skipped: needs root and `ip`/`tc` (network namespaces, tbf)")
        return
    shutil.rmtree(WORK / "journals", ignore_errors=True)
    (WORK / "journals").mkdir(parents=True)
    src = WORK / "tree"
    manifest = generate(src)
    payload = sum(size for size, _ in manifest.values())
    manifest_file = WORK / "manifest.json"
    manifest_file.write_text(json.dumps(manifest))
    data = WORK / "s3"
    shutil.rmtree(data, ignore_errors=True)
    results: list[Result] = []
    server = None
    try:
        make_link()
        server = start_server(data, WORK / "rclone-server.log")
        print(f"payload {payload / 2**20:.0f} MiB in {len(manifest)} files; link {RATE} "
              f"client->server; flapping the {FLAP_SIDE}'s end; {os.cpu_count()} cores", flush=True)
        with open(WORK / "tools.log", "wb") as log:
            for scenario in args.scenarios.split(","):
                reps = 1 if scenario == "c" else args.reps
                for rep in range(1, reps + 1):
                    for tool in args.tools.split(","):
                        r = one_run(scenario, tool, rep, src, data, manifest_file, payload,
                                    args.cap, log, args.journalsync_args.split())
                        results.append(r)
                        print(f"{scenario} {rep} {tool:12} {r.seconds:7.1f}s wire={r.wire:.3f} "
                              f"incomplete={r.incomplete} bucket={'ok' if r.ok else 'MISMATCH'} "
                              f"exit={r.exit_code}{' CAPPED' if r.capped else ''} flaps={r.flaps}",
                              flush=True)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        cleanup_link()
    text = (f"Measured on {machine()}, `sudo .venv/bin/python bench/flaky.py` (scenarios "
            f"{args.scenarios}, medians of {args.reps}, flapping the {FLAP_SIDE}'s end; payload "
            f"{payload / 2**20:.0f} MiB, link {RATE}):\n\n" + table(results))
    print("\n" + text)
    if args.readme:
        update_readme(text, "bench-flaky")
    (WORK / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=1))


if __name__ == "__main__":
    main()
