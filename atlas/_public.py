"""Where a public name says it lives.

Atlas keeps its code in private modules (``atlas/_stats.py``) and shows it through public ones: ``atlas``
and curated facades such as ``atlas.stats``, which import from the private modules and list what a user may
rely on. The private module names, at its end, the public home of each function and class a public module
exports::

    public("atlas.stats", Interval, bootstrap_ci, t_interval)

so its ``__module__`` is the public module as soon as the private module has run, whatever was imported
first: reprs and tracebacks say ``atlas.BadInput``, the API reference documents it where users import it
from, and a pickle names the public module (which imports the private one). It is a statement of its own,
not a decorator, so the definitions -- what a prediction's version hashes -- do not say where they are shown.
``tests/test_public_api.py`` checks every exported name. This module imports nothing: any module can use it.
"""

from __future__ import annotations

__all__ = ["public"]


def public(module: str, *objects) -> None:
    """Show each function and class of ``objects`` as defined in ``module``, its public home."""
    for obj in objects:
        obj.__module__ = module
