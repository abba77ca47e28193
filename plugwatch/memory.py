"""glibc's malloc in a worker process: two settings, made before the worker starts its threads.

Arenas. glibc gives threads that allocate at the same time arenas of their own, up to 8 per core,
and memory freed in one arena serves only that arena. The worker's threads (chDB's client calls,
the executor, aiokafka) spread the heap over several, each keeping its own free pages. Measured
with ``bench window`` (budget full, 5,000 plugins, RSS minus chDB's allocator, averaged every
~18 s): with the default, 862 -> 912 MiB over 160 s; with two arenas (``MALLOC_ARENA_MAX=2``)
850-858 MiB over 125 s; with the call instead of the variable 843-882 MiB over 145 s.

The mmap threshold. glibc serves a block of 128 KiB or more with its own mapping, given back to the
system when freed - until a freed mapped block raises the threshold to that block's size (up to
32 MiB). The worker's large blocks come and go all the time (fetch responses of up to a MiB per
partition, insert batches), and once the threshold has risen they are carved from the heap instead,
between the window's long-lived records, whose free pages the heap can rarely give back. Setting
the threshold pins it at 128 KiB. Measured with ``bench window --seconds 300 --baseline-seconds 0``
(arenas capped in all three runs), anonymous RSS with the budget full, from 140 to 300 s: with the
default 656 -> 775 MiB (rising over the last minute, RSS peak 1,023 MiB); pinned by this call 685 ->
697 MiB (between 677 and 748, RSS peak 971 MiB); pinned by the variable 691 -> 720 MiB (peak 989).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # mallopt parameters, glibc's malloc.h
M_ARENA_MAX = -8
WORKER_ARENAS = 2
WORKER_MMAP_THRESHOLD = 128 * 1024


def _mallopt():
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def tune_malloc(arenas: int = WORKER_ARENAS, mmap_threshold: int = WORKER_MMAP_THRESHOLD) -> dict[str, bool]:
    """Cap glibc's arenas at ``arenas`` and pin its mmap threshold at ``mmap_threshold`` bytes,
    before the process starts its threads. A setting whose variable is set (``MALLOC_ARENA_MAX``,
    ``MALLOC_MMAP_THRESHOLD_``: glibc has read it) is left alone, and both when the C library is not
    glibc; returns which were set."""
    mallopt = _mallopt()
    done = {"arenas": False, "mmap_threshold": False}
    if mallopt is None:
        return done
    if not os.environ.get("MALLOC_ARENA_MAX"):
        done["arenas"] = bool(mallopt(M_ARENA_MAX, arenas))
    if not os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        done["mmap_threshold"] = bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold))
    return done
