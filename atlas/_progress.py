"""Progress of a long step -- Lab training, an instrument's unit of work -- on a terminal and in a log.

Every long loop of Atlas reports through ``progress_bar(...)``, a tqdm bar (da Costa-Luis 2019) made one way:

* on a terminal (stderr is a TTY): a live bar, redrawn at most twice a second and erased when done, so that
  pytest's result lines stay readable;
* anywhere else (CI, ``nohup``, the nightly's log): whole lines, ``desc: 40/120 [00:31<01:02, 1.28 passages/s]``
  -- one when the step starts, then at most one every ``LOG_INTERVAL_S`` seconds, and one when it ends, so a log
  keeps a bounded record (about wall time / 30 s + 2 lines per step) instead of a flood of carriage returns;
* nothing when ``enabled`` is false (``-q``, ``--json``, a process that reports otherwise).

Off a terminal, a caller that owns the output may take the lines: ``routed(write_line)`` sends every bar made
inside it to ``write_line`` (the pytest plugin hands them to pytest's terminal writer, so that a progress line
never lands in the middle of a result line).

    >>> import io
    >>> log = io.StringIO()
    >>> with progress_bar(total=3, desc="perplexity tiny-gpt2", unit="passage", enabled=True, file=log) as bar:
    ...     for _ in range(3):
    ...         bar.update(1)
    >>> [line.split(" [")[0] for line in log.getvalue().splitlines()]
    ['perplexity tiny-gpt2: 0/3 passage', 'perplexity tiny-gpt2: 3/3 passage']
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO

from tqdm.auto import tqdm

__all__ = ["LOG_INTERVAL_S", "progress_bar", "progress_line", "routed", "transformers_bars_off"]

#: the least time between two lines of one step in a log
LOG_INTERVAL_S = 30.0

_LINE = "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class _Sink:
    """A stream that is not a terminal and hands each whole line to ``write_line``."""

    def __init__(self, write_line: Callable[[str], None]):
        self.write_line = write_line

    def write(self, text: str) -> None:
        for line in text.splitlines():
            if line.strip():
                self.write_line(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


_ROUTE: ContextVar[_Sink | None] = ContextVar("atlas_progress_route", default=None)


@contextmanager
def routed(write_line: Callable[[str], None]) -> Iterator[None]:
    """Inside it, every progress bar writes its lines to ``write_line`` (one call per line, no newline)."""
    token = _ROUTE.set(_Sink(write_line))
    try:
        yield
    finally:
        _ROUTE.reset(token)


class _Lines:
    """A text stream for tqdm off a terminal: each refresh becomes one whole line."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").rstrip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str, unit: str = "it",
             enabled: bool = True, file: TextIO | None = None) -> tqdm:
    """A progress bar over ``iterable`` (or ``total`` units of work counted with ``update``): a live bar on a
    terminal, whole lines at a bounded rate elsewhere, nothing when not ``enabled``. ``file``: where it writes
    (by default where ``routed`` sends it, else stderr)."""
    stream = file or _ROUTE.get() or sys.stderr
    live = stream.isatty()
    if live:
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, file=stream, leave=False,
                    mininterval=0.5, dynamic_ncols=True)
    # miniters=1: a line when an update comes LOG_INTERVAL_S after the last, and never one more from tqdm's monitor
    # thread (which otherwise re-prints a bar whose dynamic miniters it finds stale: two lines a moment apart)
    # smoothing=0: the rate and the time left are the averages since the start (lines 30 s apart, or units that
    # finish minutes apart, make a moving average swing)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, file=_Lines(stream), leave=True,
                mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S, miniters=1, smoothing=0, bar_format=_LINE)


def progress_line(line: str) -> None:
    """One whole line among the bars (e.g. a worker process's progress line, passed on): to where ``routed``
    sends lines, else to stderr above a live bar."""
    tqdm.write(line, file=_ROUTE.get() or sys.stderr)


@contextmanager
def transformers_bars_off() -> Iterator[None]:
    """Inside it, transformers draws none of its own bars (loading weights, saving a checkpoint): a local load or
    save is a moment, and its carriage returns would flood a log; the caller's progress bar says the step. The
    setting is restored afterwards."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()
