"""Progress bars that stay readable in a terminal, a file and a CI log.

In a terminal: tqdm's bar, redrawn in place. When stderr is not a terminal (redirected to a file, a CI
log): one plain line per update, at most one every ``DIFFKIT_PROGRESS_SECONDS`` seconds (default 30),
so a long run writes a few dozen lines instead of thousands of carriage-return redraws.
"""
from __future__ import annotations

import os
import sys


class _LinePerUpdate:
    """A file for tqdm that turns each in-place redraw (``\\r`` + status) into one line of its own."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def log_interval_seconds() -> float:
    """Seconds between progress lines when stderr is not a terminal (``$DIFFKIT_PROGRESS_SECONDS``, default 30)."""
    text = os.environ.get("DIFFKIT_PROGRESS_SECONDS", "30")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"DIFFKIT_PROGRESS_SECONDS must be a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise ValueError(f"DIFFKIT_PROGRESS_SECONDS must be zero or more seconds, got {text!r}")
    return value


def progress_bar(total: int | None, desc: str, enabled: bool = True, *, initial: int = 0, leave: bool = True, stream=None):
    """A tqdm bar over ``total`` units: in place on a terminal, one line per ``log_interval_seconds()`` otherwise."""
    from tqdm import tqdm

    stream = sys.stderr if stream is None else stream
    if not enabled:
        return tqdm(total=total, disable=True)
    if hasattr(stream, "isatty") and stream.isatty():
        return tqdm(total=total, initial=initial, desc=desc, leave=leave, dynamic_ncols=True, file=stream)
    interval = log_interval_seconds()
    # maxinterval >= mininterval, or tqdm's monitor thread would force redraws more often than asked
    return tqdm(total=total, initial=initial, desc=desc, leave=True, file=_LinePerUpdate(stream), ncols=100, ascii=True,
                mininterval=interval, maxinterval=max(interval, 10.0), miniters=1)
