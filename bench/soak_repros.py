"""Deterministic reproductions of what bench/soak.py found, one scenario each:

  stray    SIGKILL at CreateMultipartUpload (the store creates the upload, the journal
           never hears of it), the file deleted (or renamed), then plain runs: the
           incomplete upload stays under the prefix for good, every run exiting 0.
  mmap     a streamed (--large-files stream) upload killed after 2 parts; part 1's bytes
           then change without any timestamp moving (a store through a mapping whose page
           was already faulted in); the next run (--resume, or plain) keeps part 1 by its
           journaled ETag, hashes the bytes it read now, and stamps that hash: the object's
           sha256 metadata is not the hash of its bytes, and `verify` says all is well.
  dirfile  (rclone serve s3, a filesystem underneath) a directory `a` with `a/b` synced,
           then `a` becomes a file: uploads precede deletes, the object `a` cannot be
           written while `a/b` exists, a failed upload refuses every delete: never converges.

    .venv/bin/python bench/soak_repros.py stray [delete|rename] [rclone|moto]
    .venv/bin/python bench/soak_repros.py mmap [resume|plain]
    .venv/bin/python bench/soak_repros.py dirfile
"""

from __future__ import annotations

import hashlib
import mmap
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from journalsync.devtools.localserver import MotoS3Server, RcloneS3Server  # noqa: E402
from tests.support.proxy import Fault, RecordingProxy  # noqa: E402

MiB = 1024 * 1024


def server(kind: str, work: Path):
    srv = RcloneS3Server(work / "data", log_file=work / "rclone.log") if kind == "rclone" else MotoS3Server()
    srv.start()
    srv.create_bucket("bkt")
    return srv


def env_for(srv, work: Path, endpoint: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JOURNALSYNC_"))}
    env.update(srv.env(), AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null",
               AWS_EC2_METADATA_DISABLED="true", XDG_STATE_HOME=str(work / "state"))
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


def run_cmd(src: Path, work: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "journalsync", "run", str(src), "s3://bkt/p", "--delete",
            "--max-delete-percent", "100", "--journal", str(work / "j.sqlite"),
            "--multipart-threshold", "5MiB", "--part-size", "5MiB", *extra]


def show(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode} {result.stdout.strip()} {result.stderr.strip()[-300:]}"


def uploads(srv) -> list:
    try:
        return [(u["Key"], u["UploadId"][:12]) for u in
                srv.client().list_multipart_uploads(Bucket="bkt").get("Uploads", [])]
    except Exception as exc:  # noqa: BLE001 - rclone: NoSuchUpload for a bucket without any
        return [] if "NoSuchUpload" in str(exc) else [str(exc)]


def stray(then: str = "delete", kind: str = "rclone") -> bool:
    work = Path(f"/tmp/js-soak-repro/stray-{then}-{kind}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    srv = server(kind, work)
    src = work / "src"
    src.mkdir()
    (src / "big").write_bytes(random.Random(1).randbytes(12 * MiB))
    (src / "small").write_bytes(b"small")
    box: dict = {}

    def hook(req):
        if req.operation == "CreateMultipartUpload" and "proc" in box:
            box.pop("proc").send_signal(signal.SIGKILL)  # the request still reaches the store
        return None

    try:
        with RecordingProxy(srv.port, hook=hook) as proxy:
            env = env_for(srv, work, proxy.endpoint_url)
            box["proc"] = subprocess.Popen(run_cmd(src, work), env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True)
            while "proc" in box:
                time.sleep(0.01)
            time.sleep(1)
            print("1. run SIGKILLed at its CreateMultipartUpload of 'big'; incomplete uploads:", uploads(srv))
            if then == "delete":
                (src / "big").unlink()
            else:
                (src / "big").rename(src / "big.renamed")
            print(f"2. {then} 'big'")
            for n in (3, 4):
                print(f"{n}. plain run:", show(subprocess.run(run_cmd(src, work), env=env,
                                                             capture_output=True, text=True)))
            left = uploads(srv)
    finally:
        srv.stop()
    print("incomplete uploads after two clean runs (expected none):", left)
    return not left


def mmap_edit(mode: str = "resume") -> bool:
    work = Path(f"/tmp/js-soak-repro/mmap-{mode}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    srv = server("rclone", work)
    src = work / "src"
    src.mkdir()
    big = src / "big"
    big.write_bytes(random.Random(1).randbytes(16 * MiB))

    def ident():
        st = os.stat(big)
        return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino

    fh = open(big, "r+b")
    mapped = mmap.mmap(fh.fileno(), 0)
    mapped[100:101] = b"\0"  # the write fault: the timestamps move now, never again for this page
    time.sleep(2.5)  # past the racy window (2 s)
    box: dict = {}

    def hook(req):
        if req.operation == "UploadPart" and req.query["partNumber"][0] == "3" and "proc" in box:
            time.sleep(1.5)  # parts 1 and 2 journaled
            box.pop("proc").send_signal(signal.SIGKILL)
            return Fault(reset=True)
        return None

    ok = True
    try:
        with RecordingProxy(srv.port, hook=hook) as proxy:
            env = env_for(srv, work, proxy.endpoint_url)
            cmd = run_cmd(src, work, "--workers", "1", "--large-files", "stream")
            box["proc"] = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            box["proc"].wait() if "proc" in box else None
            time.sleep(0.5)
            parts = sqlite3.connect(work / "j.sqlite").execute("SELECT count(*) FROM multipart_parts").fetchone()[0]
            print(f"1. streamed run of a 16 MiB file SIGKILLed at part 3; parts journaled: {parts}")
            before = ident()
            mapped[100:108] = b"EDITEDV2"  # part 1 changes; no timestamp moves
            mapped.flush()
            print("2. bytes 100..108 rewritten through the mapping; identity unchanged:", ident() == before)
            proxy.hook = None
            extra = ["--resume"] if mode == "resume" else []
            print(f"3. run {' '.join(extra) or '(plain)'}:", show(subprocess.run(cmd + extra, env=env,
                                                                                capture_output=True, text=True)))
            c = srv.client()
            body = c.get_object(Bucket="bkt", Key="p/big")["Body"].read()
            meta = {k.lower(): v for k, v in c.head_object(Bucket="bkt", Key="p/big")["Metadata"].items()}
            print("   object == file:", body == big.read_bytes(),
                  "| metadata sha256 == sha256(object bytes):", meta.get("sha256") == hashlib.sha256(body).hexdigest(),
                  "| metadata sha256 == sha256(file):", meta.get("sha256") == hashlib.sha256(big.read_bytes()).hexdigest())
            ok = meta.get("sha256") == hashlib.sha256(body).hexdigest() and body == big.read_bytes()
            print("4. no-op run:", show(subprocess.run(cmd, env=env, capture_output=True, text=True)))
            v = subprocess.run([sys.executable, "-m", "journalsync", "verify", "s3://bkt/p", "--journal",
                                str(work / "j.sqlite")], env=env, capture_output=True, text=True)
            print("5. verify:", show(v))
    finally:
        mapped.close()
        fh.close()
        srv.stop()
    return ok


def dirfile() -> bool:
    work = Path("/tmp/js-soak-repro/dirfile")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    srv = server("rclone", work)
    src = work / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "b").write_bytes(b"x")
    (src / "c").write_bytes(b"c")
    env = env_for(srv, work)
    try:
        print("1. run:", show(subprocess.run(run_cmd(src, work), env=env, capture_output=True, text=True)))
        shutil.rmtree(src / "a")
        (src / "a").write_bytes(b"now a file")
        print("2. directory 'a' replaced by a file 'a'")
        codes = []
        for n in (3, 4):
            r = subprocess.run(run_cmd(src, work), env=env, capture_output=True, text=True)
            codes.append(r.returncode)
            print(f"{n}. run:", show(r))
    finally:
        srv.stop()
    return codes[-1] == 0


def main() -> int:
    what = sys.argv[1] if len(sys.argv) > 1 else "stray"
    if what == "stray":
        ok = stray(*(sys.argv[2:4]))
    elif what == "mmap":
        ok = mmap_edit(*(sys.argv[2:3]))
    else:
        ok = dirfile()
    print("OK" if ok else "VIOLATION")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
