"""process.reuse_part_buffers() (when a run's uploads begin): part-sized buffers freed by one part are used again by the next,
not unmapped and faulted in afresh (16% of a large upload's client CPU in a perf profile)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Ten 8 MiB part buffers, one after another on one thread (as the CRT's event loop allocates
# a request body per part), every page written: the page faults that thread took.
PROBE = """\
import ctypes, resource, sys, threading

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
from journalsync.process import release_large_buffers, reuse_part_buffers
release_large_buffers()  # a run's start: each buffer mapped on its own
if sys.argv[1] == "tuned":
    reuse_part_buffers()
faults = []

def parts():
    start = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(10):
        buf = libc.malloc(8 << 20)
        ctypes.memset(buf, 1, 8 << 20)
        libc.free(buf)
    faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - start)

thread = threading.Thread(target=parts)
thread.start()
thread.join()
print(faults[0])
"""

PAGES = (8 << 20) // 4096  # the faults one fresh 8 MiB buffer takes with 4 KiB pages


def faults(mode: str, tmp_path) -> int:
    proc = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_part_buffer_is_used_again_by_the_next_part(tmp_path):
    mapped = faults("mapped", tmp_path)
    assert mapped >= 9 * PAGES, mapped  # the probe sees every fresh buffer faulted in
    tuned = faults("tuned", tmp_path)
    assert tuned < 2 * PAGES, (tuned, mapped)  # the first buffer's pages, then reused
