"""Pausing Python's cyclic garbage collector around bulk work on a run's records."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Collect nothing inside the block (objects are still freed by reference counting).

    Reading and summarising 100,000 records makes hundreds of thousands of dicts without a single
    reference cycle; the collector scanned them all again every few thousand allocations, which
    cost as much as the work itself.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
