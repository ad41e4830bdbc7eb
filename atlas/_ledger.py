"""The store's ledger: how a record proves itself. Pure functions over SQLModel records; the store
(``atlas._store``) reads and writes, this module only hashes and checks.

Every evidence record (a run, a derivation, a verdict, a protocol-log step, a judgment, an adjustment,
a calibration rate) is *sealed* when it is written, with three columns:

* ``content_hash`` -- ``atlas._provenance.content_hash`` of the record's content: every column but the
  seal and a database-assigned integer id, each as the database gives it back (``plain``), and the
  ``extra`` content the store adds: a run's or a derivation's tables (canonical rows: each table's row
  values in their ``row`` order), the content hashes of the runs a verdict used;
* ``chain_seq`` -- its position in its table's chain (0, 1, 2 ...);
* ``chain_hash`` -- the hash of (the previous record's ``chain_hash``, its position, its content hash).

So a row inserted under a run, a record edited, inserted or deleted, each breaks a hash that
``check_chain`` names. What a hash chain cannot prove on its own: a writer who knows this algorithm can
compute a consistent forged chain; compare a chain's head (``atlas verify --json``) with a copy kept
elsewhere to rule that out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import JSON, Integer

from ._provenance import content_hash

__all__ = ["SEAL", "Problem", "check_chain", "link", "plain", "record_content", "seal", "trust"]

#: the columns of a seal: never part of the content they seal
SEAL = ("chain_seq", "content_hash", "chain_hash")


@dataclass(frozen=True)
class Problem:
    """One record that does not verify: ``record`` names it (``run 3f2a...``), ``what`` says how."""

    record: str
    what: str

    def __str__(self) -> str:
        return f"{self.record}: {self.what}"


def plain(column, value):
    """A column's value as the database gives it back, for hashing: JSON as parsed JSON (tuples as lists,
    non-finite numbers as null), a time as UTC ISO 8601, a non-finite float as null (SQLite keeps no
    NaN), anything else as the column's Python type (a numpy number as a plain one, 3.0 in an integer
    column as 3)."""
    if value is None:
        return None
    if isinstance(column.type, JSON):
        return json.loads(json.dumps(value, allow_nan=False))
    if isinstance(value, datetime):  # aware, or naive UTC (SQLite keeps no zone): as UTC without one
        return (value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value).isoformat()
    try:
        kind = column.type.python_type
    except NotImplementedError:
        kind = object
    try:
        value = value if kind is object else kind(value)  # SQLModel's text column names no type: text as it is
    except (TypeError, ValueError):  # what no writer of Atlas stores (bytes in a number's column): as its repr
        return repr(value)
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _content_columns(record) -> list:
    """The columns a record's content hash covers: all but the seal and an integer id the database assigns."""
    return [c for c in type(record).__table__.columns
            if c.name not in SEAL and not (c.primary_key and isinstance(c.type, Integer))]


def record_content(record, extra: dict | None = None) -> dict:
    """What a record's ``content_hash`` is taken over: its columns (``plain``) and ``extra``."""
    return {"columns": {c.name: plain(c, getattr(record, c.name)) for c in _content_columns(record)},
            **(extra or {})}


def link(previous: str | None, seq: int, content: str) -> str:
    """The ``chain_hash`` of the record at position ``seq`` after the record whose chain hash is ``previous``."""
    return content_hash({"previous": previous, "seq": seq, "content": content})


def seal(record, previous: tuple[int, str] | None, extra: dict | None = None) -> None:
    """Seal a record about to be written after ``previous`` (the position and chain hash of its table's last
    record; None for the first). A numpy number in a column is first held as the plain number it stands for
    (SQLite would store a numpy integer as bytes)."""
    for column in _content_columns(record):
        value = getattr(record, column.name)
        if isinstance(value, np.generic):
            setattr(record, column.name, value.item())
    seq = 0 if previous is None else previous[0] + 1
    record.content_hash = content_hash(record_content(record, extra))
    record.chain_seq = seq
    record.chain_hash = link(None if previous is None else previous[1], seq, record.content_hash)


#: what a record without a seal is
UNSEALED = ("not sealed: written outside Atlas (or by an Atlas that did not seal its records), so nothing "
            "vouches for it")


def _sealed(record) -> bool:
    return None not in (record.chain_seq, record.content_hash, record.chain_hash)


def _sound(record, extra: dict | None) -> bool:
    """The record's content (with ``extra``) has the hash its seal holds."""
    return record.content_hash == content_hash(record_content(record, extra))


def trust(record, extra: dict | None, previous: list[str | None], changed: str) -> str:
    """Why one sealed record cannot be trusted, "" when it verifies: it is sealed, its content (with ``extra``)
    matches its hash, and its link follows one of ``previous`` (the chain hashes stored at the position
    before it; ``[None]`` for the first)."""
    if not _sealed(record):
        return UNSEALED
    if not _sound(record, extra):
        return f"its content does not match its hash: {changed}"
    if not any(record.chain_hash == link(p, record.chain_seq, record.content_hash) for p in previous):
        return "its chain link does not follow the record before it: a record was inserted, deleted or edited"
    return ""


def check_chain(records: list, label, extra, changed: str = "changed after it was written") -> list[Problem]:
    """Every problem of one table's chain: ``records`` are the table's rows (any order), ``label(record)``
    names one, ``extra(record)`` gives the extra content it was sealed with, ``changed`` says what a content
    mismatch means for this table.

    A record without a seal was written outside Atlas (or by an Atlas before records were sealed); a record
    whose content does not match its hash was changed; a missing position was deleted; a second record at
    one position, or a link that does not follow the record before it, was inserted or edited."""
    problems, by_seq = [], {}
    for r in records:
        if _sealed(r):
            by_seq.setdefault(r.chain_seq, []).append(r)
        else:
            problems.append(Problem(label(r), UNSEALED))
    previous, expected = None, 0
    for seq in sorted(by_seq):
        if seq != expected:
            first, last = expected, seq - 1
            where = f"position {first}" if first == last else f"positions {first} to {last}"
            problems.append(Problem(label(by_seq[seq][0]), f"the chain skips {where} before it: "
                                                           "record(s) deleted"))
        group = by_seq[seq]
        sound = [r for r in group if _sound(r, extra(r))]
        linked = [r for r in sound if seq != expected or r.chain_hash == link(previous, seq, r.content_hash)]
        keep = (linked or sound or group)[0]
        for r in group:  # by identity: records compare by their fields
            if not any(r is s for s in sound):
                problems.append(Problem(label(r), f"its content does not match its hash: {changed}"))
            elif r is not keep:
                problems.append(Problem(label(r), f"a second record at position {seq} of the chain: inserted"))
            elif not any(r is s for s in linked):
                problems.append(Problem(label(r), "its chain link does not follow the record before it: "
                                                  "a record was inserted, deleted or edited"))
        previous, expected = keep.chain_hash, seq + 1
    return problems
