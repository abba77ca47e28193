"""glibc's malloc arenas in a worker process.

glibc gives threads that allocate at the same time arenas of their own, up to 8 per core, and
memory freed in one arena serves only that arena. The worker's threads (chDB's client calls, the
executor, aiokafka) spread the heap over several, each keeping its own free pages. Measured with
``bench window`` (budget full, 5,000 plugins, RSS minus chDB's allocator, averaged every ~18 s):
with the default, 862 -> 912 MiB over 160 s; with two arenas (``MALLOC_ARENA_MAX=2``) 850-858 MiB
over 125 s; with this call instead of the variable 843-882 MiB over 145 s.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_ARENA_MAX = -8  # mallopt parameter, glibc's malloc.h
WORKER_ARENAS = 2


def limit_malloc_arenas(arenas: int = WORKER_ARENAS) -> bool:
    """Cap glibc's arenas at ``arenas``, before the process starts its threads. Left alone when
    ``MALLOC_ARENA_MAX`` is set (glibc has read it) or the C library is not glibc; returns whether
    the cap was set."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))
