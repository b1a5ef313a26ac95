"""Process-wide settings for a run: the garbage collector during start-up, and the C
allocator's treatment of large buffers. Both are measured effects on every run."""

from __future__ import annotations

import gc


def settle_gc() -> None:
    """Start-up is over: the garbage collector, off while the modules were imported and the
    clients built (cli.main), comes back on. Those imports allocate hundreds of thousands of
    objects that live until the process ends, and the collector's full passes over them
    cost 0.1-0.2 s of every run's start (measured with gc.callbacks) for nothing; frozen,
    they are never scanned again. Idempotent."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


M_TRIM_THRESHOLD = -1  # glibc's mallopt() parameters
M_MMAP_THRESHOLD = -3
# The largest mmap threshold glibc takes on 64 bits (half its 64 MiB arena heaps): part
# bodies of the default 8 MiB, and up to 32 MiB, stay in the heap.
MMAP_THRESHOLD = 32 << 20
# Free memory at the top of a heap kept for the next buffer rather than given back: the
# part memory of a run (multipart.PART_MEMORY, 48 MiB) and some.
TRIM_THRESHOLD = 64 << 20


def tune_allocator() -> None:
    """Have glibc keep freed part-sized buffers for the next part instead of unmapping them.

    Each part in flight holds a part-sized buffer: the CRT's own (it reads a request's whole
    body into a new one, on its event-loop thread) and, for a streamed file, ours. Mapped on
    their own and unmapped when freed (glibc's rule above its threshold, which a fixed
    1 MiB threshold here used to force), every part's buffer is fresh memory: its pages
    faulted in and zeroed by the kernel, then unmapped. A perf profile of 2 x 1 GiB sent to
    rclone serve s3 put 16% of the client's CPU there (page faults 13.7%, munmap 2.3%, all
    on the CRT's thread). Kept in the heap (a threshold above the part size, and no trim
    of the free top of a heap below TRIM_THRESHOLD), the next part's buffer reuses those
    pages: CPU per GiB sent 4.49 -> 3.94 s (2 x 1 GiB), 5.82 -> 5.43 s (8 x 64 MiB, with
    the run's fixed start-up cost), for about 10 MB more peak RSS (137 -> 149 MB; the
    1 MiB threshold had been chosen for 154 -> 142 MB on the mixed tree). Part sizes over
    32 MiB are still mapped on their own. Elsewhere than glibc, nothing changes."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    except (OSError, AttributeError):
        pass
