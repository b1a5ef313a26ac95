"""`make demo`: start a local S3 server (rclone serve s3), sync a sample tree, sync it again,
edit one file, sync again, and show `journalsync status`. Everything lives in .demo/."""

from __future__ import annotations

import os
import random
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from journalsync.devtools.localserver import RcloneS3Server

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"
SOURCE = WORK / "source"
BUCKET = "demo-backups"
DEST = f"s3://{BUCKET}/nightly/host1"


def make_tree() -> None:
    rnd = random.Random(42)
    for i in range(40):
        path = SOURCE / "docs" / f"chapter-{i:02d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"Chapter {i}\n" + "lorem ipsum " * rnd.randint(10, 2000))
    for i in range(10):
        path = SOURCE / "photos" / "2026" / f"IMG_{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rnd.randbytes(rnd.randint(20_000, 300_000)))
    (SOURCE / "site").mkdir()
    (SOURCE / "site" / "index.html").write_text("<h1>hello</h1>\n")
    (SOURCE / "site" / "caf\u00e9 menu.json").write_text('{"coffee": 3}\n')
    (SOURCE / "db-dump.bin").write_bytes(rnd.randbytes(12 * 1024 * 1024))  # multipart


def journalsync(env: dict[str, str], *args: str) -> None:
    shown = " ".join(shlex.quote(a.replace(str(ROOT) + "/", "")) for a in args)
    print(f"\n$ journalsync {shown}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "journalsync", *args], env=env)
    print(f"(exit {proc.returncode})", flush=True)
    if proc.returncode != 0:
        raise SystemExit(proc.returncode)


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    SOURCE.mkdir(parents=True)
    make_tree()
    with RcloneS3Server(WORK / "s3-data", log_file=WORK / "rclone.log") as server:
        server.create_bucket(BUCKET)
        print(f"local S3 server (rclone serve s3) at {server.endpoint_url}, bucket {BUCKET}")
        env = {**os.environ, **server.env(), "XDG_STATE_HOME": str(WORK / "state")}
        run = ["run", str(SOURCE), DEST]

        print("\n# 1. first run: every file is new")
        journalsync(env, *run)
        print("\n# 2. nothing changed: nothing is uploaded (files written within 2 s of their\n"
              "#    hash are read once more: a hash that young is not trusted)")
        journalsync(env, *run)

        print("\n# 3. edit one file in place, same size, and put its mtime back")
        path = SOURCE / "docs" / "chapter-07.txt"
        st = path.stat()
        data = bytearray(path.read_bytes())
        data[:9] = b"CHAPTER 7"
        path.write_bytes(bytes(data))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        journalsync(env, *run, "--dry-run")
        journalsync(env, *run)

        print("\n# 4. what the journal remembers")
        journalsync(env, "status", str(SOURCE), DEST)
    print("\nserver stopped; everything the demo made is in .demo/")
    print("to try it by hand: `make server` starts the same server in the foreground and "
          "prints what to paste")


if __name__ == "__main__":
    main()
