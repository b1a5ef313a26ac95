"""A randomized "many nights" soak of `journalsync run --delete` against a real local S3
server, through the tests' fault-injecting proxy (tests/support/proxy.py).

Each cycle, from a seeded RNG:
  1. mutates the source tree (new files of 0 B / small / multipart size, same-size edits
     with the mtime restored, appends, truncations, deletes, renames, swaps, a file
     replaced by a directory or a symlink and back, awkward names);
  2. runs `journalsync run SRC s3://BUCKET/PREFIX --delete` once or a few times through
     the proxy: clean, with injected faults (500s, resets before/after the store did the
     work, held answers, stalls, slow bodies, flipped bytes where the store checks MD5),
     SIGKILLed at a random moment (a timer, or the Nth request, before or after it was
     forwarded), or with a file mutated while the run is in flight (by the proxy hook, at
     the upload of that very file); sometimes with --resume, --workers 1..6;
  3. (most cycles, always the last) a final clean run (must exit 0), then checks:
     every regular file is an object with identical bytes, its metadata sha256 equals
     sha256 of those bytes, no extra object under the prefix, the decoys outside the prefix
     untouched, ListMultipartUploads empty, `journalsync verify` exits 0, and a further
     no-op run sends no PUT/UploadPart/CreateMultipartUpload/CopyObject.

    .venv/bin/python bench/soak.py --seed N --cycles K --server rclone|moto|seaweed \
        --journal sqlite|pg [--workdir DIR] [--stop-on-violation]

Every violation is printed with its seed, cycle and the steps of every cycle so far
(also in WORKDIR/steps.log). Exit status: 0 no violation, 1 violations.
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
import threading
import time
import traceback
import unicodedata
import uuid
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from botocore.exceptions import ClientError  # noqa: E402

from journalsync.devtools.localserver import MotoS3Server, RcloneS3Server  # noqa: E402
from tests.support.proxy import Fault, RecordingProxy  # noqa: E402

MiB = 1024 * 1024
PREFIX = "soak/p1"
DECOYS = {"soak/p10/keep.txt": b"decoy 1", "soak/p1.txt": b"decoy 2", "soak/p1x/y": b"decoy 3",
          "other/a": b"decoy 4"}
SIZE_ARGS = ["--multipart-threshold", "5MiB", "--part-size", "5MiB"]
UPLOAD_OPS = {"PutObject", "UploadPart", "CreateMultipartUpload", "CompleteMultipartUpload"}


class Violation(Exception):
    pass


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Soak:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed
        self.rng = random.Random(args.seed)
        self.work = Path(args.workdir or f"/tmp/js-soak/{args.server}-{args.journal}-{args.seed}")
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        self.src = self.work / "src"
        self.src.mkdir()
        self.outside = self.work / "outside"
        self.outside.mkdir()
        (self.outside / "secret").write_bytes(b"outside the tree: never uploaded")
        self.bucket = f"js-soak-{args.seed}-{uuid.uuid4().hex[:6]}"
        self.steps: list[str] = []  # every step of every cycle, for the report
        self.violations: list[str] = []
        self.cycle = 0
        self.mode = None  # the proxy hook's current behaviour
        self.hook_lock = threading.Lock()
        self.name_counter = 0
        self.plain_next = False
        self.stats = {"runs": 0, "kills": 0, "fault_runs": 0, "inflight_mutations": 0,
                      "checks": 0, "faults_injected": 0}
        self.steps_log = open(self.work / "steps.log", "w")
        self.pg_admin = None
        self.pg_db = None

    # ------------------------------------------------------------------ setup
    def log(self, line: str) -> None:
        text = f"[seed {self.seed} cycle {self.cycle}] {line}"
        self.steps.append(text)
        self.steps_log.write(text + "\n")
        self.steps_log.flush()
        if self.args.verbose:
            print(text, flush=True)

    def start_server(self):
        kind = self.args.server
        if kind == "moto":
            import logging

            logging.getLogger("werkzeug").setLevel(logging.WARNING)
            self.server = MotoS3Server()
        elif kind == "rclone":
            (self.work / "rclone").mkdir()
            self.server = RcloneS3Server(self.work / "rclone" / "data", log_file=self.work / "rclone.log")
        else:
            from journalsync.devtools.localserver import SeaweedS3Server

            (self.work / "seaweed").mkdir()
            self.server = SeaweedS3Server(self.work / "seaweed", log_file=self.work / "weed.log")
        self.server.start()
        self.server.create_bucket(self.bucket)
        self.s3 = self.server.client()
        for key, body in DECOYS.items():
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        self.proxy = RecordingProxy(self.server.port, hook=self.hook)
        self.proxy.__enter__()

    def journal_args(self) -> list[str]:
        if self.args.journal == "pg":
            return ["--journal", self.pg_url, "--job", "soak"]
        return ["--journal", str(self.work / "journal.sqlite")]

    def start_journal(self):
        if self.args.journal != "pg":
            return
        import psycopg

        self.pg_admin = psycopg.connect(host="127.0.0.1", port=5432, user="postgres",
                                        dbname="postgres", autocommit=True)
        self.pg_db = f"js_soak_{self.seed}_{uuid.uuid4().hex[:8]}"
        self.pg_admin.execute(f'CREATE DATABASE "{self.pg_db}"')
        self.pg_url = f"postgresql://postgres@127.0.0.1:5432/{self.pg_db}"

    def stop(self):
        try:
            self.proxy.__exit__(None, None, None)
        except Exception:  # noqa: BLE001
            pass
        try:
            self.server.stop()
        except Exception:  # noqa: BLE001
            pass
        if self.pg_admin is not None and not self.args.keep_db:
            self.pg_admin.execute(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)')
            self.pg_admin.close()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JOURNALSYNC_"))}
        env.update(AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null",
                   AWS_EC2_METADATA_DISABLED="true", XDG_STATE_HOME=str(self.work / "state"),
                   PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
        env.update(self.server.env())
        env["AWS_ENDPOINT_URL"] = self.proxy.endpoint_url
        return env

    # ------------------------------------------------------------------ the tree
    def files(self) -> list[Path]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.src):
            for name in filenames:
                p = Path(dirpath) / name
                if p.is_file() and not p.is_symlink():
                    out.append(p)
        return sorted(out)

    def entries(self) -> list[Path]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.src):
            for name in filenames + dirnames:
                out.append(Path(dirpath) / name)
        return sorted(out)

    def dirs(self) -> list[Path]:
        return [self.src] + sorted(p for p in self.src.rglob("*") if p.is_dir() and not p.is_symlink())

    def new_name(self) -> str:
        self.name_counter += 1
        n = self.name_counter
        styles = ["f{n}.txt", "file {n} with spaces.dat", "ünïcødé-{n}-日本.bin", "emoji-{n}-🦀.txt",
                  "pct%20-{n}+plus&amp=.txt", "q?{n}#hash.txt", "tab-less ~{n}~.log", "{n}",
                  "UPPER-{n}.TXT", "dots..{n}..x", "-dash-{n}"]
        styles.append("nfd-e\u0301-{n}.txt")  # NFD spelling of é (the key is NFC)
        if self.args.server != "seaweed":  # SeaweedFS keeps `\` as `/` (documented, exit 1)
            styles.append("back\\slash-{n}.txt")
        return self.rng.choice(styles).format(n=n)

    def rand_size(self) -> int:
        r = self.rng.random()
        if r < 0.12:
            return 0
        if r < 0.65:
            return self.rng.randint(1, 4096)
        if r < 0.90:
            return self.rng.randint(4097, 300_000)
        return self.rng.randint(5 * MiB, 13 * MiB)  # multipart (threshold 5 MiB)

    def data(self, size: int) -> bytes:
        return self.rng.randbytes(size)

    def rel(self, p: Path) -> str:
        return p.relative_to(self.src).as_posix()

    def big_count(self) -> int:
        return sum(1 for f in self.files() if f.stat().st_size >= 5 * MiB)

    def op_new(self):
        d = self.rng.choice(self.dirs())
        if self.rng.random() < 0.3:
            d = d / self.new_name()
            if d.exists():
                return
            d.mkdir(parents=True)
        p = d / self.new_name()
        size = self.rand_size()
        if size >= 5 * MiB and self.big_count() >= 3:
            size = self.rng.randint(0, 2000)
        p.write_bytes(self.data(size))
        self.log(f"new {self.rel(p)!r} size={size}")

    def pick_file(self) -> Path | None:
        files = self.files()
        return self.rng.choice(files) if files else None

    def op_same_size_edit(self, restore_mtime=True):
        p = self.pick_file()
        if p is None or p.stat().st_size == 0:
            return
        st = p.stat()
        size = st.st_size
        off = self.rng.randrange(size)
        n = min(size - off, self.rng.randint(1, 64))
        with open(p, "r+b") as fh:
            fh.seek(off)
            old = fh.read(n)
            new = bytes((b ^ 0x5A) for b in old)
            fh.seek(off)
            fh.write(new)
        if restore_mtime:
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # touch -r
        self.log(f"same-size edit {self.rel(p)!r} at {off}+{n} restore_mtime={restore_mtime}")

    def op_append(self):
        p = self.pick_file()
        if p is None:
            return
        n = self.rng.choice([1, 10, 1000, self.rng.randint(1, 200_000)])
        with open(p, "ab") as fh:
            fh.write(self.data(n))
        self.log(f"append {self.rel(p)!r} +{n}")

    def op_truncate(self):
        p = self.pick_file()
        if p is None:
            return
        size = p.stat().st_size
        new = self.rng.choice([0, size // 2, max(0, size - 1)])
        os.truncate(p, new)
        self.log(f"truncate {self.rel(p)!r} {size}->{new}")

    def op_delete(self):
        p = self.pick_file()
        if p is None or len(self.files()) < 3:
            return
        p.unlink()
        self.log(f"delete {self.rel(p)!r}")

    def op_rename(self):
        p = self.pick_file()
        if p is None:
            return
        d = self.rng.choice(self.dirs())
        q = d / self.new_name()
        if q.exists():
            return
        p.rename(q)
        self.log(f"rename {self.rel(p)!r} -> {self.rel(q)!r}")

    def op_swap(self):
        files = self.files()
        if len(files) < 2:
            return
        a, b = self.rng.sample(files, 2)
        tmp = a.with_name(a.name + ".swaptmp")
        a.rename(tmp)
        b.rename(a)
        tmp.rename(b)
        self.log(f"swap {self.rel(a)!r} <-> {self.rel(b)!r}")

    def op_to_dir(self):
        p = self.pick_file()
        if p is None or len(self.files()) < 3:
            return
        p.unlink()
        p.mkdir()
        q = p / self.new_name()
        q.write_bytes(self.data(self.rng.randint(0, 3000)))
        self.log(f"file->dir {self.rel(p)!r} (now holds {q.name!r})")

    def op_to_symlink(self):
        p = self.pick_file()
        if p is None or len(self.files()) < 3:
            return
        target = self.rng.choice([self.outside / "secret", self.pick_file() or self.outside / "secret",
                                  self.src / "dangling-nowhere"])
        p.unlink()
        p.symlink_to(target)
        self.log(f"file->symlink {self.rel(p)!r} -> {target}")

    def op_symlink_back(self):
        links = [p for p in self.entries() if p.is_symlink()]
        if not links:
            return self.op_new()
        p = self.rng.choice(links)
        p.unlink()
        p.write_bytes(self.data(self.rng.randint(0, 5000)))
        self.log(f"symlink->file {self.rel(p)!r}")

    def op_dir_to_file(self):
        ds = [d for d in self.dirs() if d != self.src]
        if not ds:
            return
        d = self.rng.choice(ds)
        inside = [p for p in d.rglob("*") if p.is_file() and not p.is_symlink()]
        if len(self.files()) - len(inside) < 2:
            return
        shutil.rmtree(d)
        d.write_bytes(self.data(self.rng.randint(0, 3000)))
        self.log(f"dir->file {self.rel(d)!r} (removed {len(inside)} files)")

    def op_big_middle_edit(self):
        bigs = [f for f in self.files() if f.stat().st_size >= 5 * MiB]
        if not bigs:
            return self.op_same_size_edit()
        p = self.rng.choice(bigs)
        st = p.stat()
        off = self.rng.randrange(st.st_size)
        with open(p, "r+b") as fh:
            fh.seek(off)
            b = fh.read(1)
            fh.seek(off)
            fh.write(bytes([b[0] ^ 1]))
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        self.log(f"big same-size edit {self.rel(p)!r} at {off} mtime restored")

    OPS = [("op_new", 6), ("op_same_size_edit", 4), ("op_append", 2), ("op_truncate", 2),
           ("op_delete", 2), ("op_rename", 2), ("op_swap", 1), ("op_to_dir", 1),
           ("op_to_symlink", 1), ("op_symlink_back", 1), ("op_dir_to_file", 1),
           ("op_big_middle_edit", 2)]

    def mutate(self, count: int):
        ops = self.OPS
        if not self.args.dir_swaps:  # a file <-> directory at one key: see --dir-swaps
            ops = [(n, w) for n, w in ops if n not in ("op_to_dir", "op_dir_to_file")]
        names, weights = zip(*ops)
        for _ in range(count):
            op = self.rng.choices(names, weights)[0]
            if op == "op_same_size_edit":
                self.op_same_size_edit(restore_mtime=self.rng.random() < 0.8)
            else:
                getattr(self, op)()

    # ------------------------------------------------------------------ the proxy hook
    def hook(self, req):
        with self.hook_lock:
            mode = self.mode
        if mode is None:
            return None
        return mode(req)

    def fault_mode(self, rate: float, kinds: list[str], rng: random.Random):
        ops = ["PutObject", "UploadPart", "CreateMultipartUpload", "CompleteMultipartUpload",
               "HeadObject", "ListObjects", "DeleteObjects", "DeleteObject", "ListParts",
               "ListMultipartUploads", "AbortMultipartUpload", "GetObject"]
        lock = threading.Lock()

        def mode(req):
            if req.operation not in ops:
                return None
            with lock:
                if rng.random() >= rate:
                    return None
                kind = rng.choice(kinds)
            self.stats["faults_injected"] += 1
            if kind == "500":
                return Fault(status=500, code="InternalError")
            if kind == "503":
                return Fault(status=503, code="SlowDown")
            if kind == "reset":
                return Fault(reset=True)
            if kind == "500-after":
                return Fault(status=500, after_forward=True)
            if kind == "reset-after":
                return Fault(reset=True, after_forward=True)
            if kind == "hold":
                return Fault(status=0, hold=2.0)
            if kind == "stall":
                return Fault(stall=2.0, stall_at=rng.random())
            if kind == "delay":
                return Fault(status=0, delay=rng.uniform(0.05, 1.0))
            if kind == "flip":
                if req.operation in ("PutObject", "UploadPart") and req.size:
                    return Fault(status=0, flip=True)
                return None
            if kind == "200-error":
                if req.operation == "CompleteMultipartUpload":
                    return Fault(status=200, code="InternalError", after_forward=True)
                return None
            return None

        return mode

    # ------------------------------------------------------------------ runs
    def cmd(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "journalsync", "run", str(self.src), f"s3://{self.bucket}/{PREFIX}",
                *self.journal_args(), "--delete", "--max-delete-percent", "100", *SIZE_ARGS, *extra]

    def popen(self, argv: list[str]) -> subprocess.Popen:
        return subprocess.Popen(argv, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=str(self.work))

    def _finish(self, proc: subprocess.Popen, timeout: float, what: str) -> tuple[int, str, str]:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler: every thread's stack on stderr
            try:
                out, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            self.violation(f"HANG: {what} did not end in {timeout}s; stderr tail:\n{err[-3000:]}")
            return -999, out, err
        return proc.returncode, out, err

    def run_cli(self, argv: list[str], timeout: float = 300, what: str = "run") -> tuple[int, str, str]:
        self.stats["runs"] += 1
        return self.finish(self.popen(argv), timeout, what)

    def finish(self, proc, timeout, what):
        code, out, err = self._finish(proc, timeout, what)
        if code not in (0, -9) and err.strip():
            self.log(f"   ({what} exit {code}) stderr: {err.strip()[-700:]!r}")
        return code, out, err

    @staticmethod
    def summary(out: str) -> dict[str, str]:
        lines = [l for l in out.strip().splitlines() if l.startswith("journalsync: ")]
        if not lines:
            return {}
        return dict(p.split("=", 1) for p in lines[-1][len("journalsync: "):].split() if "=" in p)

    def extra_flags(self) -> list[str]:
        flags = ["--workers", str(self.rng.randint(1, 6))]
        if self.rng.random() < 0.5:
            flags.append("--resume")
        if self.rng.random() < 0.2:
            flags += ["--large-files", self.rng.choice(["stream", "prehash"])]
        if self.rng.random() < 0.15:
            flags.append("--no-crt")
        return flags

    def night(self):
        """One to three runs of the night, each with its own disturbance."""
        for _ in range(self.rng.randint(1, 3)):
            kind = self.rng.choices(["clean", "faults", "kill", "inflight", "kill+faults", "term",
                                     "kill_create"], [2, 3, 4, 2, 2, 1, 1])[0]
            flags = self.extra_flags()
            if self.plain_next and "--resume" in flags:  # cron without --resume, as many run it
                flags.remove("--resume")
            self.plain_next = False
            getattr(self, "night_" + kind.replace("+", "_"))(flags)
            if self.rng.random() < 0.3:
                self.mutate(self.rng.randint(1, 3))

    def night_clean(self, flags):
        code, out, err = self.run_cli(self.cmd(*flags))
        self.log(f"run clean {flags} -> exit {code} {out.strip()[-160:]!r}")

    def _faults(self):
        r = random.Random(self.rng.random())
        kinds = r.sample(["500", "503", "reset", "500-after", "reset-after", "hold", "stall", "delay",
                          "flip" if self.args.server != "moto" else "delay", "200-error"],
                         r.randint(1, 5))
        rate = r.choice([0.03, 0.08, 0.15, 0.3])
        return kinds, rate, r

    def night_faults(self, flags):
        kinds, rate, r = self._faults()
        self.stats["fault_runs"] += 1
        self.mode = self.fault_mode(rate, kinds, r)
        try:
            code, out, err = self.run_cli(self.cmd(*flags, "--retry-timeout", "40s"))
        finally:
            self.mode = None
        self.log(f"run faults={kinds} rate={rate} {flags} -> exit {code} {out.strip()[-160:]!r}")
        if code == 70:
            self.violation(f"exit 70 (internal error) under faults {kinds}: {err.strip()[-1500:]}")

    def night_kill(self, flags, faults=False):
        self.stats["kills"] += 1
        how = self.rng.choice(["timer", "request", "request-forwarded", "upload", "upload-forwarded"])
        q = self.rng.choice([0.05, 0.15, 0.35])  # the chance each (upload) request is the kill
        slow = self.rng.choice([0, 0.02, 0.1, 0.3])  # slow uploads, so the kill lands mid-run
        op_filter = UPLOAD_OPS if "upload" in how else None
        delay = self.rng.uniform(0.3, 1.6)
        kr = random.Random(self.rng.random())
        proc_box: dict = {}
        lock = threading.Lock()
        killed = threading.Event()
        fault = None
        if faults:
            kinds, rate, r = self._faults()
            fault = self.fault_mode(rate, kinds, r)
        else:
            kinds, rate = [], 0
        hit_on: list[str] = []

        def mode(req):
            if how != "timer" and (op_filter is None or req.operation in op_filter):
                with lock:
                    hit = not killed.is_set() and "proc" in proc_box and kr.random() < q
                    if hit:
                        proc_box["proc"].send_signal(signal.SIGKILL)
                        killed.set()
                        hit_on.append(f"{req.operation} {unquote(req.path)}")
                if hit:
                    if how.endswith("forwarded"):
                        return None  # the store does the work; the client is gone
                    return Fault(reset=True)
            if fault:
                got = fault(req)
                if got:
                    return got
            if slow and req.operation in UPLOAD_OPS:
                return Fault(status=0, delay=slow)
            return None

        self.mode = mode
        try:
            proc = self.popen(self.cmd(*flags, "--retry-timeout", "40s"))
            self.stats["runs"] += 1
            proc_box["proc"] = proc
            if how == "timer":
                try:
                    proc.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    killed.set()
            code, out, err = self.finish(proc, 300, "killed run")
        finally:
            self.mode = None
        what = f"after {delay:.2f}s" if how == "timer" else f"p={q} per {how} {hit_on}"
        self.log(f"run KILL {what} slow={slow} faults={kinds} rate={rate} {flags} -> "
                 f"{'killed' if code == -9 else f'exit {code}'} {out.strip()[-120:]!r}")
        if code == 70:
            self.violation(f"exit 70 (internal error): {err.strip()[-1500:]}")

    def night_kill_create(self, flags):
        """SIGKILL at the first CreateMultipartUpload, which the store still receives (the
        crash between Create and the journal's commit), then, sometimes, the user deletes
        or renames that file before the next night."""
        self.stats["kills"] += 1
        box: dict = {}
        hit: list[str] = []
        prefix_path = f"/{self.bucket}/{PREFIX}/"

        def mode(req):
            if req.operation == "CreateMultipartUpload" and "proc" in box and not hit:
                box["proc"].send_signal(signal.SIGKILL)
                hit.append(unquote(req.path[len(prefix_path):]))
            return None  # forwarded: the store creates the upload, its answer is lost

        self.mode = mode
        try:
            proc = self.popen(self.cmd(*flags))
            self.stats["runs"] += 1
            box["proc"] = proc
            code, out, err = self.finish(proc, 300, "killed run")
        finally:
            self.mode = None
        then = ""
        if hit and (self.src / hit[0]).is_file():
            p = self.src / hit[0]
            choice = self.rng.choice(["delete", "rename", "keep"])
            if choice == "delete":
                p.unlink()
            elif choice == "rename":
                p.rename(p.with_name(p.name + ".renamed"))
            then = f"; then {choice} {hit[0]!r}"
            self.plain_next = self.rng.random() < 0.7
        self.log(f"run KILL at CreateMultipartUpload {hit} {flags} -> "
                 f"{'killed' if code == -9 else f'exit {code}'}{then}")

    def night_kill_faults(self, flags):
        self.night_kill(flags, faults=True)

    def night_term(self, flags):
        delay = self.rng.uniform(0.3, 5.0)
        proc = self.popen(self.cmd(*flags))
        self.stats["runs"] += 1
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
        code, out, err = self.finish(proc, 120, "SIGTERMed run")
        self.log(f"run SIGTERM after {delay:.2f}s {flags} -> exit {code} {out.strip()[-120:]!r}")
        if code == 70:
            self.violation(f"exit 70 after SIGTERM: {err.strip()[-1500:]}")

    def night_inflight(self, flags):
        """Mutate the file being uploaded, at its Nth upload request (in the hook, so the
        mutation lands between the run's reading and the store's answer)."""
        self.stats["inflight_mutations"] += 1
        n = self.rng.randint(1, 3)
        action = self.rng.choice(["same-size", "append", "truncate", "delete", "same-size-keep-mtime",
                                  "replace-symlink"])
        count = [0]
        done: list[str] = []
        lock = threading.Lock()
        prefix_path = f"/{self.bucket}/{PREFIX}/"
        r = random.Random(self.rng.random())

        def mode(req):
            if req.operation not in ("PutObject", "UploadPart", "CreateMultipartUpload"):
                return None
            if not req.path.startswith(prefix_path) or req.header("x-amz-copy-source"):
                return None
            with lock:
                if count[0] or r.random() >= 0.4:
                    return None
                count[0] += 1
            rel = unquote(req.path[len(prefix_path):])
            p = self.src / rel
            try:
                if not p.is_file() or p.is_symlink():
                    return None
                st = p.stat()
                if action.startswith("same-size") and st.st_size:
                    with open(p, "r+b") as fh:
                        off = r.randrange(st.st_size)
                        fh.seek(off)
                        b = fh.read(1)
                        fh.seek(off)
                        fh.write(bytes([b[0] ^ 0xFF]))
                    if action == "same-size-keep-mtime":
                        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
                elif action == "append":
                    with open(p, "ab") as fh:
                        fh.write(r.randbytes(r.randint(1, 5000)))
                elif action == "truncate":
                    os.truncate(p, st.st_size // 2)
                elif action == "delete":
                    p.unlink()
                elif action == "replace-symlink":
                    p.unlink()
                    p.symlink_to(self.outside / "secret")
                done.append(f"{action} {rel!r} at {req.operation}")
            except OSError as exc:
                done.append(f"{action} {rel!r} failed: {exc}")
            return None

        self.mode = mode
        try:
            code, out, err = self.run_cli(self.cmd(*flags))
        finally:
            self.mode = None
        self.log(f"run INFLIGHT #{n} {done or action + ' (never triggered)'} {flags} -> exit {code} "
                 f"{out.strip()[-120:]!r}")
        if code == 70:
            self.violation(f"exit 70: {err.strip()[-1500:]}")

    # ------------------------------------------------------------------ checks
    def violation(self, what: str):
        text = f"VIOLATION seed={self.seed} cycle={self.cycle} server={self.args.server} " \
               f"journal={self.args.journal}: {what}"
        self.violations.append(text)
        print(text, flush=True)
        self.log(text)

    def list_keys(self, prefix: str) -> dict[str, dict]:
        out, token = {}, None
        while True:
            kw = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                kw["ContinuationToken"] = token
            page = self.s3.list_objects_v2(**kw)
            for o in page.get("Contents", []):
                out[o["Key"]] = o
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]

    def uploads(self) -> list:
        try:
            return self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "NoSuchUpload":
                return []
            raise

    def check(self):
        self.stats["checks"] += 1
        code, out, err = self.run_cli(self.cmd("--workers", str(self.rng.randint(1, 6))), what="final run")
        self.log(f"final clean run -> exit {code} {out.strip()[-200:]!r}")
        if code != 0:
            self.violation(f"final clean run exited {code} (expected 0): {out.strip()[-300:]} | "
                           f"stderr: {err.strip()[-1500:]}")
        expected: dict[str, bytes] = {}
        for p in self.files():
            key = f"{PREFIX}/{unicodedata.normalize('NFC', self.rel(p))}"
            if key in expected:
                self.violation(f"two files share the key {key!r} (NFC/NFD spellings): one is not stored")
            expected[key] = p.read_bytes()
        listed = self.list_keys(PREFIX + "/")
        missing = sorted(set(expected) - set(listed))
        extra = sorted(set(listed) - set(expected))
        if missing:
            self.violation(f"files missing from the bucket: {missing[:10]}")
        if extra:
            self.violation(f"extra objects under the prefix: {extra[:10]}")
        for key in sorted(set(expected) & set(listed)):
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
            meta = {k.lower(): v for k, v in head.get("Metadata", {}).items()}
            if body != expected[key]:
                self.violation(f"object {key!r} holds other bytes than the file: {len(body)} B sha "
                               f"{sha(body)[:12]} vs file {len(expected[key])} B sha {sha(expected[key])[:12]}")
            if meta.get("sha256") != sha(body):
                self.violation(f"object {key!r} metadata sha256={meta.get('sha256')} but its bytes hash "
                               f"to {sha(body)} (metadata {meta})")
        for key, body in DECOYS.items():
            try:
                got = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except ClientError as exc:
                got = exc
            if got != body:
                self.violation(f"decoy {key!r} outside the prefix changed/deleted: {got!r}")
        ups = self.uploads()
        if ups:
            self.violation(f"incomplete multipart uploads left: {[(u['Key'], u['UploadId'][:12]) for u in ups]}")
        argv = [sys.executable, "-m", "journalsync", "verify", f"s3://{self.bucket}/{PREFIX}",
                *self.journal_args()]
        vcode, vout, verr = self.run_cli(argv, what="verify")
        self.log(f"verify -> exit {vcode} {vout.strip()[-160:]!r}")
        if vcode != 0:
            self.violation(f"verify exited {vcode}: {vout.strip()[-500:]} | {verr.strip()[-500:]}")
        self.proxy.clear()
        ncode, nout, nerr = self.run_cli(self.cmd("--workers", str(self.rng.randint(1, 6))), what="no-op run")
        ops = self.proxy.operations()
        sends = {k: ops[k] for k in ("PutObject", "UploadPart", "CreateMultipartUpload",
                                      "CompleteMultipartUpload", "DeleteObjects", "DeleteObject")
                 if ops[k]}
        s = self.summary(nout)
        self.log(f"no-op run -> exit {ncode} {nout.strip()[-200:]!r} ops={dict(ops)}")
        if ncode != 0 or sends or s.get("uploaded") != "0" or s.get("deleted") != "0":
            self.violation(f"no-op run was not a no-op: exit {ncode} summary {s} writes {sends} "
                           f"stderr {nerr.strip()[-800:]}")

    # ------------------------------------------------------------------ main
    def go(self) -> int:
        self.start_journal()
        self.start_server()
        t0 = time.monotonic()
        try:
            for _ in range(self.rng.randint(15, 35)):  # the first night's tree
                self.op_new()
            self.mutate(self.rng.randint(3, 8))
            for self.cycle in range(1, self.args.cycles + 1):
                if self.cycle > 1:
                    self.mutate(self.rng.randint(2, 12))
                self.night()
                if self.cycle == self.args.cycles or self.rng.random() < 0.7:
                    before = len(self.violations)
                    self.check()
                    if len(self.violations) > before and self.args.stop_on_violation:
                        break
                if self.args.time_budget and time.monotonic() - t0 > self.args.time_budget:
                    self.log("time budget reached")
                    if self.cycle != self.args.cycles:
                        self.check()
                    break
        except Exception:  # noqa: BLE001 - the soak's own failure: report it, stop
            self.violation("soak crashed: " + traceback.format_exc()[-2000:])
        finally:
            self.stop()
        print(f"seed={self.seed} server={self.args.server} journal={self.args.journal} cycles={self.cycle} "
              f"stats={json.dumps(self.stats)} violations={len(self.violations)} "
              f"elapsed={time.monotonic() - t0:.0f}s", flush=True)
        if self.violations:
            print("--- steps to reproduce (also in " + str(self.work / "steps.log") + "):")
            for line in self.steps:
                print("  " + line)
        return 1 if self.violations else 0


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))  # stop() still runs: servers, database
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--server", choices=["rclone", "moto", "seaweed"], default="rclone")
    ap.add_argument("--journal", choices=["sqlite", "pg"], default="sqlite")
    ap.add_argument("--workdir")
    ap.add_argument("--time-budget", type=float, default=0, help="stop after this many seconds")
    ap.add_argument("--stop-on-violation", action="store_true")
    ap.add_argument("--keep-db", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--dir-swaps", choices=["on", "off", "auto"], default="auto",
                    help="replace files by directories at the same key and back (auto: moto only; "
                         "on rclone serve s3 and SeaweedFS, filesystems underneath, the object `a` "
                         "cannot be written while `a/b` exists, and uploads precede deletes, so "
                         "such a tree never converges: reported once, not soaked)")
    args = ap.parse_args()
    args.dir_swaps = args.dir_swaps == "on" or (args.dir_swaps == "auto" and args.server == "moto")
    return Soak(args).go()


if __name__ == "__main__":
    sys.exit(main())
