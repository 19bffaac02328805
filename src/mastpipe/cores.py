"""The cores this process may run on: what work split across threads or processes is sized by."""

from __future__ import annotations

import os

__all__ = ["cores"]


def cores() -> int:
    """The cores this process may run on (its CPU affinity on Linux; elsewhere every core)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
