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


M_MMAP_THRESHOLD = -3  # glibc's mallopt() parameter


def release_large_buffers() -> None:
    """Have glibc map every allocation of 1 MiB or more on its own and give it back to the
    system when it is freed. Part bodies (8 MiB, the CRT's buffers and ours) are freed on
    many threads; with glibc's default, the threshold rises after the first such free and
    later ones stay in per-thread arenas: measured on the mixed bench tree, 154 MB peak RSS
    with the default and 142 MB with this. Elsewhere than glibc, nothing changes."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):
        pass
