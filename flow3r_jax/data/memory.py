"""Keep freed memory in the process: no page faults on every new training sample.

A training sample of 8 frames + 8 flow pairs at 378x518 is ~27 MB of fresh NumPy / OpenCV
arrays, and the decoders' scratch buffers add ~3 MB per flow. With glibc's defaults, blocks that
large are mmap-ed and, when freed, handed back to the kernel (munmap, or heap trimming above
the dynamic trim threshold), so every sample page-faults and zero-fills its memory again: ~7,000
faults and 7-17 ms of system time per sample on the reference machine, as much as all the JPEG
decoding. `keep_freed_memory()` tells glibc (through `mallopt`) to serve such blocks from the
heap, never to trim it, and to use one arena for all threads (Grain's reader threads free what
the consumer thread allocated, and vice versa), so memory is reused instead of faulted in.

The cost: the process keeps its peak heap (bounded by the prefetch buffers: a few samples) until
it exits. It is process-wide and irreversible; `InputConfig.keep_freed_memory=False` turns it
off. On a C library other than glibc it does nothing (returns False); a preloaded allocator
(jemalloc, tcmalloc) makes it unnecessary.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

__all__ = ["keep_freed_memory"]

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX)
_TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt takes: never trim in practice

_lock = threading.Lock()
_state: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Applies the settings above once per process; True if they are in effect (glibc)."""
    with _lock:
        if "done" in _state:
            return _state["done"]
        ok = False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = getattr(libc, "mallopt", None)
            if mallopt is not None and hasattr(libc, "gnu_get_libc_version"):
                mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                ok = all(
                    mallopt(param, value) == 1
                    for param, value in ((_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD), (_M_ARENA_MAX, 1))
                )
        except OSError:
            ok = False
        _state["done"] = ok
        return ok
