"""Files written whole: a reader, or another process writing the same file, sees the old file or the
new one, never part of one.

``replacing(path)`` hands out a temporary path of this writer's own beside ``path`` (same folder, so
the rename is atomic; a unique hidden name, so eight processes writing one report do not share it),
renames it onto ``path`` when the block ends, and removes it if the block fails: no ``.partial`` is
left behind by an error (a full disk, a folder that cannot be written). ``cannot_write`` makes the
one-line error that names the folder, the reason and the fix.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with replacing(folder / "index.html") as tmp:
    ...     _ = tmp.write_text("<p>done</p>", encoding="utf-8")
    >>> [p.name for p in folder.iterdir()]
    ['index.html']
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ._errors import BadInput

__all__ = ["cannot_write", "replacing"]


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it (atomically) when the block ends without an error and
    removed when it ends with one."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cannot_write(what: str, where: Path, exc: OSError, fix: str, error: type[BadInput] = BadInput) -> BadInput:
    """The one-line error for an ``OSError`` while writing ``what`` to ``where``: the reason (no space left on
    device, permission denied, not a directory ...) and ``fix``."""
    return error(f"cannot write {what} to {where}: {exc.strerror or exc}; {fix}")
