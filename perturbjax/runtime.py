"""Process-wide settings that make JAX's CPU backend fast, applied before JAX starts.

XLA:CPU allocates each step's temporaries as one block of hundreds of MB and frees it after the
step. glibc serves blocks that large with a fresh `mmap` (the threshold cannot exceed 32 MB), so
every step faults in and zeroes every page again: about 79k page faults per step of the hetero
GAT on the consensus graph, a fifth of its time (0.33 s -> 0.26 s without them, measured with
`benchmarks/step.py gat full real`). Serving them from the heap and keeping up to
`TRIM_THRESHOLD` bytes of freed heap reuses the same pages. One arena keeps XLA's worker threads
on that heap (a thread's own arena is at most 64 MB and would fall back to `mmap`).

The cost is fragmentation: a step that juggles many blocks of hundreds of MB can hold more
memory. The consensus GAT with signal propagation (`--config.model.propagation_steps=3`, 6
steps, no baselines) peaked at 7.1 GiB and took 61 s, against 3.3 GiB and 43 s with glibc's
defaults, and 4.9 GiB and 41 s with tcmalloc. For such runs set `PERTURBJAX_MALLOC=system`
(glibc's defaults), or preload tcmalloc (`LD_PRELOAD=libtcmalloc_minimal.so.4`, which caches
large blocks itself) with it. Elsewhere than glibc nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
TRIM_THRESHOLD = 1 << 30  # freed heap above this (transient peaks, e.g. loading) goes back

_applied: bool | None = None


def tune_host_allocator() -> bool:
    """Applies the glibc settings once per process; True if they are in effect. Call it before
    JAX creates its thread pool (first backend use), or the pool's threads keep their arenas."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    choice = os.environ.get("PERTURBJAX_MALLOC", "").lower()
    if choice not in ("", "tuned", "system"):
        _applied = None  # the caller may report it and stop; nothing was changed
        raise ValueError(f"PERTURBJAX_MALLOC={choice!r}: expected 'system' (glibc's defaults) "
                         "or 'tuned' (the default)")
    if choice == "system":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_ARENA_MAX, 1))
    _applied = all(mallopt(key, value) == 1 for key, value in settings)
    return _applied
