"""Pause Python's cyclic garbage collector while a bulk phase allocates many containers.

Building a usage report makes ~10^6 lists, tuples and strings that all survive until the
report is done; each automatic collection on the way traverses every one of them, which
measured as a third of the report's time on both the server and the `ac` side
(docs/benchmarks.md, "ac adm top images"). Nothing in those phases creates reference
cycles, so collecting is pure overhead. The switch is process-wide: the collector is turned
back on only if it was on when the block started, so overlapping blocks (two concurrent
reports) end with it enabled. Never hold a pause across a `yield` to a caller that might not
resume the generator: keep each block synchronous.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
