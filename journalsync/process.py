"""Process-wide settings for a run: the garbage collector during start-up, the C
allocator's treatment of large buffers. Each is a measured effect on every run. The end
of the process is entry.py's."""

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


def release_large_buffers() -> None:
    """At a run's start: have glibc map every allocation of 1 MiB or more on its own and
    give it back to the system when it is freed, so start-up's large passing allocations
    (service models, imports, the scan) do not stay in the heap: with glibc's default, the
    threshold rises after the first such free and later ones stay in per-thread arenas:
    measured on the mixed bench tree, 154 MB peak RSS with the default and 142 MB with
    this. Raised again for part bodies once the uploads begin (reuse_part_buffers).
    Elsewhere than glibc, nothing changes."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):
        pass


# The largest mmap threshold glibc takes on 64 bits (half its 64 MiB arena heaps): part
# bodies of the default 8 MiB, and up to 32 MiB, stay in the heap.
PART_MMAP_THRESHOLD = 32 << 20
# Free memory at the top of a heap kept for the next part rather than given back: the part
# memory of a run (partsend.PART_MEMORY, 48 MiB) and some.
PART_TRIM_THRESHOLD = 64 << 20


def reuse_part_buffers() -> None:
    """When the uploads begin: have glibc keep freed part-sized buffers for the next part
    instead of unmapping them.

    Each part in flight holds a part-sized buffer: the CRT's own (it reads a request's whole
    body into a new one, on its event-loop thread) and, for a streamed file, ours. Mapped
    on their own and unmapped when freed (release_large_buffers' rule), every part's buffer
    is fresh memory: its pages faulted in and zeroed by the kernel, then unmapped. A perf
    profile of 2 x 1 GiB sent to rclone serve s3 put 16% of the client's CPU there (page
    faults 13.7%, munmap 2.3%, all on the CRT's thread). Kept in the heap (a threshold above
    the part size, and no trim of a heap's free top below PART_TRIM_THRESHOLD), the next
    part's buffer reuses those pages. Measured with bench/cpu.py (client user + system
    CPU-s per GiB sent, rclone serve s3 on loopback): 2 x 1 GiB 4.23 -> 3.71, 8 x 64 MiB
    5.53 -> 5.02 (medians of 3), for peak RSS 137 -> 145 and 140 -> 149 MB. Part sizes
    over 32 MiB are still mapped on their own. Set at the uploads, not at start-up: set
    there, start-up's large passing allocations stayed in the heap too (8 x 64 MiB: peak
    RSS 153 MB). Elsewhere than glibc, nothing changes."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, PART_MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, PART_TRIM_THRESHOLD)
    except (OSError, AttributeError):
        pass
