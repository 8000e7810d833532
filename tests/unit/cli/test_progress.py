"""The stderr progress bar: drawn only on a terminal, erased before a line is printed."""

from __future__ import annotations

import io

from imageregistry.cli.ac.progress import Progress


def test_clear_erases_the_bar_and_the_next_update_draws_it_again() -> None:
    stream = io.StringIO()
    with Progress("Verifying blobs", stream=stream, enabled=True) as bar:
        bar.total = 10
        bar.update(3)
        bar.clear()
        assert stream.getvalue().endswith("\r\x1b[2K")
        bar.update(4)  # right after a clear: not throttled away
        assert stream.getvalue().endswith("4/10")


def test_nothing_is_drawn_off_a_terminal() -> None:
    stream = io.StringIO()
    with Progress("Verifying blobs", stream=stream, enabled=False) as bar:
        bar.total = 10
        bar.update(3)
        bar.clear()
    assert stream.getvalue() == ""
