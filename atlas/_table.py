"""Rows as text columns, for the command's tables (``atlas verdicts``, ``atlas calibrate``) and the plan.

    >>> for line in aligned(("step", "seconds"), [("measure", "1.5"), ("reuse", "")], right={1}):
    ...     print(line)
    step    seconds
    measure     1.5
    reuse
"""

from __future__ import annotations

__all__ = ["aligned", "duration"]


def aligned(headers: tuple[str, ...], rows: list[tuple], right: set[int]) -> list[str]:
    """Rows as text columns under a header, padded to the widest cell; columns in ``right`` right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    return [" ".join((str(x).rjust(w) if i in right else str(x).ljust(w)) for i, (x, w) in
                     enumerate(zip(line, widths, strict=True))).rstrip() for line in (headers, *rows)]


def duration(seconds: float) -> str:
    """A wall time as the plan and a run's summary print it: seconds up to two minutes, then minutes."""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
