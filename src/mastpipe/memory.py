"""The C allocator, where it is glibc: large blocks mapped on their own, freed heap pages
given back. Imports nothing heavy: the ``mastpipe`` command calls it before any command runs.

glibc raises its mmap threshold (up to 32 MiB) as large blocks are freed; after that, the
product lists' answers (15 MB each), their parsing buffers and the batches' columns share the
heaps of four threads, and memory freed in between stays resident: a 3M-row run peaked at
1.5 GB for 0.7 GB of table, and a 10M-row one held the stacked table twice. Elsewhere than
glibc, both functions do nothing.
"""

from __future__ import annotations

import functools
import os
from typing import Any

__all__ = ["give_back_freed_memory", "map_large_blocks"]

#: glibc's ``mallopt`` parameter for the size from which blocks are mapped on their own.
_M_MMAP_THRESHOLD = -3


@functools.cache
def _glibc() -> Any:
    """The C library when it is glibc, else None."""
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return None
        import ctypes

        return ctypes.CDLL("libc.so.6")
    except (AttributeError, OSError, ValueError):  # no confstr here, or no libc.so.6
        return None


def map_large_blocks() -> None:
    """Map every block of 1 MiB or more on its own, so that freeing it gives it back (1M rows:
    peak ~640 -> ~525 MB, for ~1 s more of page faults per million rows). Only the ``mastpipe``
    process does this: the library leaves a host process's allocator alone."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)


def give_back_freed_memory() -> None:
    """Return the heap pages freed so far to the system (``malloc_trim``): batch columns under
    the mmap threshold live on the heaps and, freed, would stay resident."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
