"""Keep a long-running server's memory bounded under glibc's allocator.

glibc's malloc gives each thread that allocates its own arena, up to 8 per core, and hands
freed memory back to the system only from the top of an arena. Gradio runs every request in
a worker thread, and a training run allocates and frees hundreds of MB of activations. So
with a class of 30, the server's RSS grew with every training served: 6.8 GB after 30
three-step trainings, and it never came back down (RELIABILITY.md, 2 cores). With at most
2 arenas it levelled off at about 4 GB. The setting is the same as ``MALLOC_ARENA_MAX=2``
in the environment; ``mallopt`` lets the app set it for itself, before its threads start.
"""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # from glibc's malloc.h


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return None


def limit_arenas(n: int = 2) -> bool:
    """Cap glibc's malloc arenas at ``n`` unless MALLOC_ARENA_MAX is already set. True when applied."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, n) == 1)


def trim() -> bool:
    """Give freed heap memory back to the system (glibc ``malloc_trim``). True when some was returned."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0) == 1)
