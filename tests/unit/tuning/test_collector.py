"""`collector_paused`: the collector is off inside, and back on after overlapping pauses end."""

from __future__ import annotations

import gc

import pytest

from imageregistry.tuning.collector import collector_paused


def test_overlapping_pauses_leave_the_collector_on() -> None:
    assert gc.isenabled()
    first = collector_paused()
    second = collector_paused()
    first.__enter__()
    second.__enter__()  # a concurrent report starts while the first runs
    assert not gc.isenabled()
    first.__exit__(None, None, None)
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_an_error_inside_still_re_enables() -> None:
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("boom")
    assert gc.isenabled()
