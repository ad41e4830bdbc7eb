"""The store: an append-only record of runs, their measurement tables, verdicts, protocol events and
Technician judgments (SQLModel).

Any SQLAlchemy URL works (``sqlite:///atlas.db`` by default, PostgreSQL for a team).
The URL is checked before anything else happens (``check_store_url``: parsed, its
driver installed, an SQLite file's folder present); a store that cannot be opened is
one ``StoreUrlError`` naming it. A URL is only ever shown with its password masked
(``shown_url``).

A run, all its rows and its protocol-log step are written in one transaction, so a
crash (even a SIGKILL) leaves either all of them or none: no half-written run, no run
stuck as "running" (that status is never stored), no run missing from the log.
Every JSON column is strict JSON (NaN, ±inf refused by the serializer).

Nothing is ever updated or deleted, and the database enforces it: on SQLite,
triggers refuse UPDATE, DELETE and an INSERT that would replace an existing row
(``INSERT OR REPLACE``); on PostgreSQL, triggers refuse UPDATE, DELETE and TRUNCATE
on every Atlas table. Every write, and the creation of a new store, holds the
store's write lock (``_lock``: ``BEGIN IMMEDIATE`` on SQLite, an advisory lock on
PostgreSQL), so many processes may open and write one store at once. SQLite
connections use WAL and a busy timeout.

Every record proves itself (``atlas._ledger``): each run, derivation, verdict,
protocol-log step, judgment, adjustment and calibration rate is *sealed* when written
-- a content hash of its fields (a run's and a derivation's rows, the content hashes
of the runs a verdict used, included) and a link in its table's hash chain -- so an
inserted row, a forged run, an edit behind a dropped trigger or a deleted record is
named by ``Store.verify`` (``atlas verify``), and CISP reuses a run only when
``Store.check`` finds it sound. Opening a store never repairs it: a missing or
altered trigger (its *guard*) is reported in ``Store.gaps`` and refuses writes, a
missing table refuses the store, and only ``Store.repair`` (``atlas verify
--repair``) re-creates them, logging what it did. A read-only SQLite store
(``?mode=ro``, or a file this user may not write) is read, verified, reported and
exported; its writes are refused (``ReadOnlyStore``).

A run's tables come in two kinds. *Measured* tables are what the instrument
returned. *Summary* tables (per-domain perplexities, per-layer CIs ...) are derived
from the run's primary table under summary settings (bootstrap resamples, seed):
each derivation is a ``Derivation`` row with its own key, and its tables are
measurement rows tagged with that key, so a new number of resamples appends a
derivation to the stored run instead of measuring again. ``Store.tables`` returns
every table with the dtypes its schema declares (``atlas._schema.coerce``): a table
read back equals the one written, dtypes included.

A database made by an earlier Atlas gains the columns added since (nullable, or with
their default) when it is opened; nothing else about it changes. Its records carry no
seal: they stay readable, ``verify`` names them unsealed and CISP measures afresh
rather than reuse them.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from sqlalchemy import JSON, Column, event, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlmodel import Field, Session, SQLModel, create_engine, select

from ._errors import ReadOnlyStore, StoreFull, StoreTampered, StoreUrlError
from ._jsonsafe import json_safe
from ._ledger import Problem, check_chain, seal, trust
from ._public import public
from ._schema import coerce
from ._urls import check_store_url, error_line, shown_url, unmade_sqlite_file

__all__ = ["Adjustment", "CalibrationRecord", "Derivation", "Judgment", "Measurement", "ProtocolEvent", "ProtocolLog", "Run",
           "SESSION_COMPLETE", "Sealed", "Store", "Verification", "VerdictRecord", "check_store_url", "shown_url", "utcnow"]

#: every Atlas table and its primary key: the append-only rule covers each
_APPEND_ONLY = {"run": "id", "measurement": "id", "derivation": "key", "verdictrecord": "id", "protocolevent": "id",
                "judgment": "id", "adjustment": "id", "calibrationrecord": "id"}
#: the protocol-log action that closes a pytest session: verdicts of a session without it are partial
SESSION_COMPLETE = "session complete"
#: the key of the PostgreSQL advisory lock every write (and schema creation) holds: "atlas" in ASCII
_WRITE_LOCK = 0x61746C6173
#: how long a SQLite connection waits for the store's lock before it gives up
_BUSY_SECONDS = 60


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Sealed(SQLModel):
    """The seal every evidence record carries (``atlas._ledger``): the hash of its content (a run's and a
    derivation's tables, a verdict's runs included), its position in its table's hash chain and its link to
    the record before it. The store sets it when it writes the record; it is None only in a record written
    outside Atlas, or by an Atlas that did not seal its records."""

    chain_seq: int | None = None
    content_hash: str | None = None
    chain_hash: str | None = None


class Run(Sealed, table=True):
    """One instrument run (or one imported sheet) and everything needed to reproduce it."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, primary_key=True)
    provenance: str = "measured"  # measured | imported
    instrument: str = Field(index=True)
    instrument_version: str
    model: str = Field(index=True)
    model_revision: str
    #: the other models of a pairwise instrument: setting -> {"name": ..., "revision": ...}
    others: dict = Field(default_factory=dict, sa_column=Column(JSON))
    corpus: str
    corpus_hash: str = Field(index=True)
    settings: dict = Field(default_factory=dict, sa_column=Column(JSON))
    settings_hash: str = Field(index=True)  # the RunSpec key (atlas._cisp): what reuse matches on
    device: str
    dtype: str
    seed: int
    packages: dict = Field(default_factory=dict, sa_column=Column(JSON))
    git_commit: str | None = None
    started_at: datetime
    ended_at: datetime
    status: str  # complete | failed
    error: str | None = None


class Measurement(SQLModel, table=True):
    """One row of a run's measurement table, as validated against ``schema/<table_name>.yaml``."""

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True)
    table_name: str
    row: int
    values: dict = Field(sa_column=Column(JSON))
    derivation: str = ""  # "" for a measured table, else the key of the Derivation it belongs to


class Derivation(Sealed, table=True):
    """Summary tables derived from a run's primary table under summary settings (e.g. bootstrap resamples)."""

    key: str = Field(primary_key=True)  # atlas._cisp.SummarySpec.key
    run_id: str = Field(foreign_key="run.id", index=True)
    settings: dict = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class VerdictRecord(Sealed, table=True):
    """The outcome of one prediction version on one model, with its evidence."""

    id: int | None = Field(default=None, primary_key=True)
    prediction: str = Field(index=True)
    version: str  # the first 12 hex digits of the criterion hash
    form: str  # named | general
    claim: str
    source: str
    model: str
    corpus: str = ""  # the corpus name as sampled, e.g. "domains-v1[:24/domain]"
    corpus_hash: str = Field(default="", index=True)
    profile: str = ""  # quick | full
    code_version: str = ""  # the git commit of the code that judged it, "+uncommitted changes" when dirty
    outcome: str  # supported | refuted | inconclusive | not_run
    effect: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    criterion: dict = Field(sa_column=Column(JSON))
    criterion_hash: str
    reason: str = ""
    evidence: dict = Field(default_factory=dict, sa_column=Column(JSON))
    run_ids: list = Field(default_factory=list, sa_column=Column(JSON))
    session: str = ""
    created_at: datetime = Field(default_factory=utcnow)


class Adjustment(Sealed, table=True):
    """A verdict's outcome after Holm's (1979) adjustment over the family of general forms its session judged
    (``atlas._verdict.holm_outcomes``), written when the session ends: what ``atlas verdicts``, ``atlas diff``
    and the report show beside the verdict's own outcome."""

    id: int | None = Field(default=None, primary_key=True)
    verdict_id: int = Field(foreign_key="verdictrecord.id", index=True)
    session: str = Field(index=True)
    method: str = "holm"
    family: int  # the verdicts adjusted together
    p_adjusted: float
    outcome: str  # the verdict's outcome if it survives the adjustment, else inconclusive
    created_at: datetime = Field(default_factory=utcnow)


class CalibrationRecord(Sealed, table=True):
    """One measured rate of a prediction version (``atlas calibrate --db``): the false "supported" rate under
    a declared null (``kind`` null) or the power under its alternative (``kind`` power)."""

    id: int | None = Field(default=None, primary_key=True)
    prediction: str = Field(index=True)
    version: str
    kind: str  # null | power
    name: str
    rate: float
    mc_error: float
    reps: int
    profile: str
    resamples: int
    seed: int
    outcomes: dict = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class ProtocolEvent(Sealed, table=True):
    """One step of CISP's protocol log: an instrument measured, reused, refused or failed, in order."""

    id: int | None = Field(default=None, primary_key=True)
    session: str = Field(index=True)  # one pytest run or one CLI call
    prediction: str | None = None  # the prediction that asked for it, if any
    instrument: str
    model: str
    corpus_hash: str
    action: str  # measured | reused | refused | failed
    run_id: str | None = None
    spec_key: str = ""  # the RunSpec key the step was about (atlas._cisp)
    reason: str = ""
    created_at: datetime = Field(default_factory=utcnow)


class Judgment(Sealed, table=True):
    """A Technician's call on a declared ``technician:`` field: never computed, never changing a measurement.

    A new call is a new row; the latest one counts and the history is kept.
    """

    id: int | None = Field(default=None, primary_key=True)
    target_kind: str = Field(index=True)  # run | verdict
    target_id: str = Field(index=True)  # a run id, or a verdict id as text
    table_name: str | None = None  # the run's table the field belongs to (None for a verdict's field)
    row_key: str | None = None  # the row it is about, e.g. the domain or the layer (None: the whole table)
    field: str
    value: str
    by: str
    note: str = ""
    created_at: datetime = Field(default_factory=utcnow)


def _table_rows(tables: dict[str, pd.DataFrame]) -> dict[str, list[dict]]:
    """Each non-empty table's rows, in order, as the store keeps them (``Measurement.values``) and hashes them:
    strict JSON (NaN as null; ±inf and other objects refused, schemas refuse them first), as it reads them back."""
    return {name: json.loads(_strict_json(json_safe(df.to_dict(orient="records")))) for name, df in tables.items()
            if len(df)}


def _extra(record: Sealed, tables: dict[str, list[dict]] | None = None, runs: dict[str, str | None] | None = None
           ) -> dict | None:
    """What a record's seal covers beside its columns: a run's measured tables or a derivation's summary tables
    (``_table_rows``), the content hashes of the runs a verdict used (run id -> hash, None for a missing run)."""
    if isinstance(record, (Run, Derivation)):
        return {"tables": tables or {}}
    if isinstance(record, VerdictRecord):
        return {"runs": runs or {}}
    return None


#: every sealed table, in the order ``verify`` reports them (measurement rows are sealed by their run or derivation)
_SEALED: tuple[type[Sealed], ...] = (Run, Derivation, VerdictRecord, Adjustment, Judgment, CalibrationRecord,
                                     ProtocolEvent)
#: how a record of each table is named in a problem
_KIND = {Run: "run", Derivation: "derivation", VerdictRecord: "verdict", Adjustment: "adjustment",
         Judgment: "judgment", CalibrationRecord: "calibration rate", ProtocolEvent: "protocol-log step"}
#: what a content that does not match its hash means, for a table whose records hold more than their columns
_CHANGED = {Run: "its fields or its tables were changed after it was written (rows inserted, removed or edited)",
            Derivation: "its settings or its summary tables were changed after it was written (rows inserted, "
                        "removed or edited)",
            VerdictRecord: "its fields, or the runs it was judged on, were changed after it was written"}


def _rows_key(record: Run | Derivation) -> tuple[str, str]:
    """The (run id, derivation key) its measurement rows carry: a run's measured rows have the key ""."""
    return (record.id, "") if isinstance(record, Run) else (record.run_id, record.key)


def _label(record: Sealed) -> str:
    key = record.key if isinstance(record, Derivation) else record.id
    return f"{_KIND[type(record)]} {key}"


class _Appender:
    """The records of one write transaction, each sealed (``atlas._ledger.seal``) after the last record of its
    table, which the store's write lock (``_lock``) keeps from changing until the transaction ends."""

    def __init__(self, session: Session):
        self.session, self.heads = session, {}

    def add(self, record: Sealed, tables: dict[str, list[dict]] | None = None) -> None:
        model = type(record)
        if model not in self.heads:
            self.heads[model] = self.session.exec(
                select(model.chain_seq, model.chain_hash).where(model.chain_seq.is_not(None))
                .order_by(model.chain_seq.desc()).limit(1)).first()
        runs = None
        if isinstance(record, VerdictRecord):
            found = dict(self.session.exec(select(Run.id, Run.content_hash).where(Run.id.in_(record.run_ids))).all())
            runs = {rid: found.get(rid) for rid in record.run_ids}
        seal(record, self.heads[model], _extra(record, tables, runs))
        self.heads[model] = (record.chain_seq, record.chain_hash)
        self.session.add(record)
        self.session.flush()  # in order: a run's row before the rows that reference it

    def tables(self, record: Run | Derivation, tables: dict[str, pd.DataFrame]) -> None:
        """A run with its measured tables, or a derivation with its summary tables: sealed over their rows."""
        rows = _table_rows(tables)
        self.add(record, rows)
        run_id, key = _rows_key(record)
        self.session.add_all(Measurement(run_id=run_id, table_name=name, row=i, values=values, derivation=key)
                             for name, records in rows.items() for i, values in enumerate(records))


def _stored_rows(session: Session, run_id: str | None = None, derivation: str | None = None
                 ) -> dict[tuple[str, str], dict[str, list[dict]]]:
    """Stored measurement rows (of one run, or all; of one derivation key, or all) as ``_table_rows`` gives
    them, by (run id, derivation key)."""
    query = select(Measurement.run_id, Measurement.derivation, Measurement.table_name, Measurement.values)
    if run_id is not None:
        query = query.where(Measurement.run_id == run_id)
    if derivation is not None:
        query = query.where(Measurement.derivation == derivation)
    grouped: dict[tuple[str, str], dict[str, list[dict]]] = {}
    order = (Measurement.run_id, Measurement.derivation, Measurement.table_name, Measurement.row, Measurement.id)
    for rid, key, name, values in session.exec(query.order_by(*order)):
        grouped.setdefault((rid, key), {}).setdefault(name, []).append(values)
    return grouped


def _lock(conn) -> None:
    """Take the store's write lock for the rest of ``conn``'s transaction (its first statement): writers
    queue, so each record is chained after the last one written and a new store is created once. SQLite:
    ``BEGIN IMMEDIATE`` (waiting up to the busy timeout); PostgreSQL: a transaction-scoped advisory lock."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _WRITE_LOCK})


def _prepare(engine, sqlite: bool, read_only: bool, create: bool = True) -> dict[str, str]:
    """Open a store: create a new one whole (if ``create``), bring an existing one up to the current columns (an older Atlas
    made it), and return the gaps of its guard (``_guard_gaps``), which are reported and never silently
    filled: only ``Store.repair`` (``atlas verify --repair``) does that.

    Several processes may open a new store at the same moment (pytest-xdist workers, parallel ``atlas
    measure``): each looks and creates under the store's write lock, so the first creates everything and the
    others find it made."""
    with engine.connect() as conn:
        if not read_only:
            _lock(conn)
        gaps = _guard_gaps(conn, sqlite)
        if all(f"table {t}" in gaps for t in SQLModel.metadata.tables):  # a new store
            if read_only:
                raise ReadOnlyStore("it holds no Atlas store and is open read-only: nothing to read")
            if not create:
                raise StoreUrlError("it holds no Atlas store; check the URL")
            _install_guard(conn, sqlite, gaps)
            gaps = {}
        elif _add_missing_columns(conn, dry_run=read_only) and read_only:  # writable: added above
            raise ReadOnlyStore("an older Atlas made it and it lacks columns added since; open it once writable "
                                "(atlas verify --db URL) to add them")
        conn.commit()
    return gaps


#: the body of the function PostgreSQL's triggers call, as ``pg_proc`` keeps it
_PG_REFUSE = " BEGIN RAISE EXCEPTION 'the Atlas store is append-only: % on % refused', TG_OP, TG_TABLE_NAME; END "


def _triggers(sqlite: bool) -> dict[str, tuple[str, str]]:
    """The append-only guard: each trigger's name -> (its table, the statement that creates it).

    SQLite: UPDATE and DELETE refused; an INSERT whose key exists refused too, so ``INSERT OR REPLACE`` (which
    would delete the old row without firing a DELETE trigger) cannot rewrite a row. PostgreSQL: UPDATE, DELETE
    (row triggers: also what an upsert's DO UPDATE or an ORM merge would do) and TRUNCATE (a statement trigger)
    call ``atlas_append_only()``, which refuses them; ``INSERT ... ON CONFLICT`` is refused by the primary key."""
    refuse = "BEGIN SELECT RAISE(ABORT, 'the Atlas store is append-only'); END"
    triggers = {}
    for table, key in _APPEND_ONLY.items():
        if sqlite:
            for op in ("UPDATE", "DELETE"):
                name = f"{table}_no_{op.lower()}"
                triggers[name] = (table, f"CREATE TRIGGER {name} BEFORE {op} ON {table} {refuse}")
            triggers[f"{table}_no_replace"] = (table, f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} "
                                                      f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {key} = NEW.{key}) "
                                                      f"{refuse}")
        else:
            for name, when, each in ((f"{table}_append_only", "UPDATE OR DELETE", "ROW"),
                                     (f"{table}_no_truncate", "TRUNCATE", "STATEMENT")):
                triggers[name] = (table, f"CREATE TRIGGER {name} BEFORE {when} ON {table} FOR EACH {each} "
                                         "EXECUTE FUNCTION atlas_append_only()")
    return triggers


def _guard_gaps(conn, sqlite: bool) -> dict[str, str]:
    """What the store's guard lacks: ``table NAME`` (missing: dropped, its records lost), ``trigger NAME``
    (missing, altered or disabled: the store can be edited), ``function atlas_append_only`` (PostgreSQL: missing
    or altered). A dropped table's own triggers are not listed again."""
    present = set(inspect(conn).get_table_names())
    gaps = {f"table {t}": "missing" for t in SQLModel.metadata.tables if t not in present}
    triggers = _triggers(sqlite)
    if sqlite:
        found = dict(conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")).all())
        state = {n: "missing" if n not in found else "altered" for n, (_, sql) in triggers.items() if found.get(n) != sql}
    else:
        body = conn.execute(text("SELECT prosrc FROM pg_proc WHERE proname = 'atlas_append_only'")).scalar()
        if body != _PG_REFUSE:
            gaps["function atlas_append_only"] = "missing" if body is None else "altered"
        found = dict(conn.execute(text("SELECT tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal")).all())
        state = {n: "missing" if n not in found else "disabled" for n in triggers if found.get(n, "D") == "D"}
    gaps.update({f"trigger {n}": s for n, s in state.items() if f"table {triggers[n][0]}" not in gaps})
    return gaps


def _install_guard(conn, sqlite: bool, gaps: dict[str, str]) -> None:
    """Fill the gaps ``_guard_gaps`` found: create the missing tables (empty) and triggers, replace an altered
    or disabled trigger (and PostgreSQL's function). On a new store: everything."""
    SQLModel.metadata.create_all(conn)  # only the tables that are missing
    if not sqlite and "function atlas_append_only" in gaps:
        conn.execute(text(f"CREATE OR REPLACE FUNCTION atlas_append_only() RETURNS trigger LANGUAGE plpgsql "
                          f"AS $${_PG_REFUSE}$$"))
    for name, (table, ddl) in _triggers(sqlite).items():  # only what is missing: it locks the table against writers
        if f"table {table}" in gaps or f"trigger {name}" in gaps:
            if gaps.get(f"trigger {name}") in ("altered", "disabled"):
                conn.execute(text(f"DROP TRIGGER {name}" + ("" if sqlite else f" ON {table}")))
            conn.execute(text(ddl))


def _add_missing_columns(conn, dry_run: bool = False) -> list[str]:
    """Bring a database made by an earlier Atlas up to the current tables: add the columns it lacks (only
    name them, ``table.column``, when ``dry_run``).

    Only additions: a new column is nullable, or takes its field's default for the rows already there."""
    existing, missing = inspect(conn), []
    for table in SQLModel.metadata.sorted_tables:
        if not existing.has_table(table.name):
            continue
        have = {c["name"] for c in existing.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            missing.append(f"{table.name}.{column.name}")
            if dry_run:
                continue
            default = getattr(column.default, "arg", None) if column.default is not None else None
            if callable(default):
                default = default(None) if default.__code__.co_argcount else default()
            kind = column.type.compile(dialect=conn.dialect)
            clause = "" if default is None else f" DEFAULT {_sql_literal(default)}"
            conn.execute(text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}{clause}'))
    return missing


def _sql_literal(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (dict, list)):
        value = json.dumps(value)
    return "'" + str(value).replace("'", "''") + "'"


def _strict_json(value) -> str:
    """The store's JSON serializer: standard JSON only, so a non-finite number never reaches a JSON column
    (SQLite would store the non-standard ``NaN``/``Infinity``, PostgreSQL refuses them)."""
    return json.dumps(value, allow_nan=False)


@dataclass
class Verification:
    """What ``Store.verify`` found: the gaps of the store's guard and every record that does not verify."""

    url: str  # the store's URL, its password masked
    gaps: dict[str, str]  # "trigger run_no_update" -> missing | altered | disabled; "table judgment" -> missing
    problems: list[Problem]
    records: dict[str, int]  # the records checked, per table
    heads: dict[str, str | None]  # each chain's last link: kept elsewhere, it rules out a whole chain rewritten
    read_only: bool = False

    @property
    def ok(self) -> bool:
        return not self.gaps and not self.problems

    def lines(self) -> list[str]:
        """What is wrong, one line each: none for a store that verifies."""
        gaps = [f"{what} is {state}: " + ("its records are lost; atlas verify --repair re-creates it empty"
                                          if what.startswith("table ") else
                                          "the store is not guarded against edits; atlas verify --repair "
                                          "re-creates it") for what, state in self.gaps.items()]
        return gaps + [str(p) for p in self.problems]

    def as_dict(self) -> dict:
        return {"url": self.url, "ok": self.ok, "read_only": self.read_only, "records": self.records,
                "gaps": self.gaps, "problems": [{"record": p.record, "problem": p.what} for p in self.problems],
                "heads": self.heads}


def _gap_list(gaps: dict[str, str]) -> str:
    return ", ".join(f"{what} {state}" for what, state in gaps.items())


def _sqlite_read_only(url: URL) -> URL | None:
    """The URL that opens an SQLite store read-only, when it is to be: ``?mode=ro`` asked for (SQLite reads it
    only from a ``file:`` URI, which this writes), or a file this user may not write. None: open it as it is."""
    database, query = url.database or "", dict(url.query)
    if database in ("", ":memory:"):
        return None
    if query.get("uri") == "true":  # already a URI: as the user wrote it
        return url if query.get("mode") == "ro" else None
    path = Path(database).expanduser().absolute()
    if query.get("mode") != "ro" and not (path.exists() and not os.access(path, os.W_OK)):
        return None
    return url.set(database="file:" + quote(str(path)), query={**query, "mode": "ro", "uri": "true"})


def _full(exc: DBAPIError) -> bool:
    """Whether a database error says the store had no room: SQLite's SQLITE_FULL (13), PostgreSQL's
    disk_full (SQLSTATE 53100)."""
    return getattr(exc.orig, "sqlite_errorcode", None) == 13 or getattr(exc.orig, "sqlstate", None) == "53100"


class Store:
    """Append-only access to an Atlas database.

    >>> store = Store("sqlite://")          # in memory
    >>> store.latest_verdicts()
    []
    """

    def __init__(self, url: str, *, open_broken: bool = False, create: bool = True):
        """Open the store at ``url``, or create it (unless ``create`` is false: then a ``StoreUrlError``
        says there is none). A store whose guard has gaps (``Store.gaps``: a missing
        trigger or table) is opened as it is, never repaired: its writes are refused, and a missing table
        refuses the store (``StoreTampered``) unless ``open_broken`` (``atlas verify``). A read-only SQLite
        store (``?mode=ro``, or a file this user may not write) is opened read-only: read, verified, reported
        and exported, its writes refused (``ReadOnlyStore``)."""
        parsed = check_store_url(url)
        self.url = parsed  # a URL object: its str() and repr() mask the password
        self.shown_url = shown_url(parsed)
        sqlite = parsed.get_backend_name() == "sqlite"
        read_only = _sqlite_read_only(parsed) if sqlite else None
        self.read_only = read_only is not None
        if not create and not read_only and unmade_sqlite_file(parsed):
            raise StoreUrlError(f"no store at {self.shown_url}: the file does not exist; check the path")
        try:
            self.engine = create_engine(read_only or parsed, json_serializer=_strict_json,
                                        connect_args={"timeout": _BUSY_SECONDS} if sqlite else {"connect_timeout": 10})
        except (ArgumentError, NoSuchModuleError) as exc:
            raise StoreUrlError(f"{self.shown_url}: {error_line(exc, url)}") from None
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas_read_only if self.read_only else _sqlite_pragmas)
        try:
            self.gaps = _prepare(self.engine, sqlite, self.read_only, create)
        except (ReadOnlyStore, StoreUrlError) as exc:
            raise type(exc)(f"the store {self.shown_url}: {exc}") from None
        except (OperationalError, DBAPIError) as exc:
            fix = ("check that the file's folder is writable" if sqlite else
                   "check that the server is running and reachable, and the user, password and database name")
            raise StoreUrlError(f"cannot open the store {self.shown_url}: {error_line(exc, url)}; "
                                f"{fix}") from None
        lost = [what.removeprefix("table ") for what in self.gaps if what.startswith("table ")]
        if lost and not open_broken:
            raise StoreTampered(f"the store {self.shown_url} lacks its table(s) {', '.join(lost)} (dropped, or an "
                                "older Atlas made it): run atlas verify --db URL to see what else is broken, and "
                                "atlas verify --db URL --repair to re-create them empty (logged)")

    # --- writing -------------------------------------------------------------------------

    @contextmanager
    def _appending(self) -> Iterator[_Appender]:
        """One write transaction under the store's write lock (``_lock``), sealing every record it adds.
        Refused, with nothing written, on a read-only store or one whose guard has gaps."""
        self.check_writable()
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                _lock(session.connection())
                yield _Appender(session)
                session.commit()
            except DBAPIError as exc:
                if not _full(exc):
                    raise
                raise StoreFull(f"the store {self.shown_url} has no room for the write (disk full, or its size "
                                "limit reached): nothing was written; free space on its disk and run again") from None

    def check_writable(self) -> None:
        """Refuse (``ReadOnlyStore``, ``StoreTampered``: one line naming the fix) a store that may not be
        written: one opened read-only, or one whose guard has gaps. Every write checks it; CISP checks it
        before it measures, so that nothing is measured in vain."""
        if self.read_only:
            raise ReadOnlyStore(f"the store {self.shown_url} is open read-only: nothing was written; open it "
                                "writable (without ?mode=ro, a file this user may write) to measure, judge or import")
        if self.gaps:
            raise StoreTampered(f"the store {self.shown_url} is not guarded ({_gap_list(self.gaps)}): nothing was "
                                "written; run atlas verify --db URL to see what is broken, and atlas verify --db URL "
                                "--repair to re-create the guard (logged)")

    def write_run(self, run: Run, tables: dict[str, pd.DataFrame], derivation: Derivation | None = None,
                  summaries: dict[str, pd.DataFrame] | None = None, events: list[ProtocolEvent] = ()) -> str:
        """Write a run, all rows of its measured tables, (optionally) a derivation with its summary tables and
        the protocol-log steps about it, in one transaction; returns the run id."""
        with self._appending() as append:
            append.tables(run, tables)
            if derivation is not None:
                append.tables(derivation, summaries or {})
            for step in events:
                append.add(step)
        return run.id

    def write_runs(self, runs: list[tuple[Run, dict[str, pd.DataFrame]]], judgments: list[Judgment] = ()) -> None:
        """Write several runs, their tables and judgments about them in one transaction (an imported sheet)."""
        self.write_all([*judgments], runs)

    def write_derivation(self, derivation: Derivation, summaries: dict[str, pd.DataFrame]) -> None:
        """Append a derivation of a stored run and its summary tables, in one transaction."""
        with self._appending() as append:
            append.tables(derivation, summaries)

    def write_judgment(self, judgment: Judgment) -> Judgment:
        self.write_all([judgment])
        return judgment

    def write_verdict(self, verdict: VerdictRecord) -> None:
        # evidence is a record of what was seen: a non-finite number in it is "no number" (null)
        verdict.effect, verdict.ci_low, verdict.ci_high, verdict.evidence = json_safe(
            [verdict.effect, verdict.ci_low, verdict.ci_high, verdict.evidence], lenient=True)
        self.write_all([verdict])

    def write_event(self, event: ProtocolEvent) -> None:
        self.write_all([event])

    def write_all(self, rows: list[Sealed], runs: list[tuple[Run, dict[str, pd.DataFrame]]] = ()) -> None:
        """Append records (adjustments of one session, rates of one calibration), after ``runs`` with their
        tables, in one transaction: all or none."""
        with self._appending() as append:
            for run, tables in runs:
                append.tables(run, tables)
            for row in rows:
                append.add(row)

    def repair(self) -> list[str]:
        """Fill the gaps of the store's guard (``gaps``): re-create a missing table (empty: its records are
        lost) and a missing, altered or disabled trigger, and log it in the protocol log (a ``repaired`` step).
        Returns what was done, one line each. A record that does not verify stays as it is (and ``verify``
        keeps naming it): nothing stored is ever changed."""
        if self.read_only:
            raise ReadOnlyStore(f"the store {self.shown_url} is open read-only: it cannot be repaired; open it "
                                "writable")
        sqlite = self.engine.dialect.name == "sqlite"
        with self.engine.connect() as conn:
            _lock(conn)
            gaps = _guard_gaps(conn, sqlite)
            _install_guard(conn, sqlite, gaps)
            conn.commit()
        self.gaps = {}
        done = [f"re-created {what} ({state}{', empty' if what.startswith('table ') else ''})"
                for what, state in gaps.items()]
        if done:
            ProtocolLog(self, f"repair-{uuid.uuid4().hex}").write("repaired", instrument="store", model="",
                                                                  corpus_hash="", reason="; ".join(done))
        return done

    # --- verifying -----------------------------------------------------------------------

    def verify(self) -> Verification:
        """Check the whole store: the gaps of its guard, and every sealed record against its content hash and
        its table's chain (``atlas._ledger.check_chain``), a run's and a derivation's rows included; measurement
        rows that belong to no run or derivation are named too."""
        sqlite = self.engine.dialect.name == "sqlite"
        with self.engine.connect() as conn:
            gaps = _guard_gaps(conn, sqlite)
        present = [m for m in _SEALED if f"table {m.__tablename__}" not in gaps]
        with Session(self.engine, expire_on_commit=False) as session:
            records = {m: list(session.exec(select(m))) for m in present}
            rows = _stored_rows(session) if "table measurement" not in gaps else {}
        runs = {r.id: r for r in records.get(Run, [])}
        derivations = {d.key: d for d in records.get(Derivation, [])}

        def extra(record: Sealed) -> dict | None:
            if isinstance(record, VerdictRecord):
                return _extra(record, runs={rid: getattr(runs.get(rid), "content_hash", None)
                                            for rid in record.run_ids})
            if isinstance(record, (Run, Derivation)):
                return _extra(record, rows.get(_rows_key(record), {}))
            return None

        problems = []
        for model, found in records.items():
            problems += check_chain(found, _label, extra, _CHANGED.get(model, "changed after it was written"))
        for (rid, key), tables in rows.items():
            n = sum(map(len, tables.values()))
            if rid not in runs:
                problems.append(Problem(f"measurement rows of run {rid}", f"{n} row(s) of no stored run: inserted"))
            elif key and getattr(derivations.get(key), "run_id", None) != rid:
                problems.append(Problem(f"measurement rows of run {rid}",
                                        f"{n} row(s) of derivation {key}, which is no derivation of the run: "
                                        "inserted"))
        heads = {m.__tablename__: max(rs, key=lambda r: r.chain_seq if r.chain_seq is not None else -1).chain_hash
                 if rs else None for m, rs in records.items()}
        return Verification(self.shown_url, gaps, problems, {m.__tablename__: len(rs) for m, rs in records.items()},
                            heads, self.read_only)

    def check(self, record: Run | Derivation) -> str:
        """Why a stored run or derivation cannot be trusted, "" when it verifies: its content (its rows
        included) against its content hash, and its link to the record before it in its table's chain. CISP
        reuses a run only when it verifies."""
        model, key = type(record), _rows_key(record)
        with Session(self.engine, expire_on_commit=False) as session:
            tables = _stored_rows(session, *key).get(key, {})
            previous = ([None] if not record.chain_seq else list(session.exec(
                select(model.chain_hash).where(model.chain_seq == record.chain_seq - 1))))
        return trust(record, _extra(record, tables), previous, _CHANGED[model])

    # --- reading -------------------------------------------------------------------------

    def _select(self, table: type[SQLModel], order: tuple, **where) -> list:
        """Rows of ``table`` whose columns equal the given values, in ``order``."""
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(table).order_by(*order)
            for column, value in where.items():
                query = query.where(getattr(table, column) == value)
            return list(session.exec(query))

    def events(self, session: str | None = None, since: datetime | None = None) -> list[ProtocolEvent]:
        """The protocol log, in the order it was written (of one session, or of all; written since a time)."""
        where = {} if session is None else {"session": session}
        events = self._select(ProtocolEvent, (ProtocolEvent.id,), **where)
        if since is None:
            return events
        since = since.replace(tzinfo=None) if since.tzinfo else since  # SQLite returns naive UTC timestamps
        return [e for e in events if (e.created_at.replace(tzinfo=None) if e.created_at.tzinfo else e.created_at)
                >= since]

    def judgments(self, **where) -> list[Judgment]:
        """Judgments matching the given column values (e.g. ``target_id=run.id, field="territory"``), in order."""
        return self._select(Judgment, (Judgment.id,), **where)

    def latest_judgments(self, **where) -> dict[tuple, Judgment]:
        """The judgment that counts for each (target_kind, target_id, table_name, row_key, field): the newest."""
        return {(j.target_kind, j.target_id, j.table_name, j.row_key, j.field): j for j in self.judgments(**where)}

    def complete_sessions(self) -> set[str]:
        """The sessions that closed their protocol log (``SESSION_COMPLETE``); the verdicts of any other
        session are partial: it was killed, crashed, or is still running."""
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(ProtocolEvent.session).where(ProtocolEvent.action == SESSION_COMPLETE)
            return set(session.exec(query))

    def verdict(self, verdict_id: int) -> VerdictRecord | None:
        if not -2**63 <= verdict_id < 2**63:  # beyond any integer key
            return None
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(VerdictRecord, verdict_id)

    def runs(self, **where) -> list[Run]:
        """Runs matching the given column values, oldest first."""
        return self._select(Run, (Run.started_at,), **where)

    def run(self, run_id: str) -> Run | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(Run, run_id)

    def derivation(self, key: str) -> Derivation | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(Derivation, key)

    def derivations(self, run_id: str) -> list[Derivation]:
        """A run's derivations, oldest first."""
        return self._select(Derivation, (Derivation.created_at,), run_id=run_id)

    def tables(self, run_id: str, names: set[str] | None = None, derivation: str | None = None
               ) -> dict[str, pd.DataFrame]:
        """A run's tables (only those in ``names``, if given), rows in their original order, typed by their schemas.

        Measured tables always; summary tables from the derivation ``derivation`` (a key), or, when
        None, each summary table from the run's newest derivation that holds it."""
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(Measurement).where(Measurement.run_id == run_id)
            if names is not None:
                query = query.where(Measurement.table_name.in_(sorted(names)))
            rows = session.exec(query.order_by(Measurement.table_name, Measurement.id)).all()
        if derivation is None:  # the newest derivation per summary table
            newest = {}
            for m in sorted((m for m in rows if m.derivation), key=lambda m: m.id):
                newest[m.table_name] = m.derivation
            chosen = lambda m: m.derivation == newest.get(m.table_name, "")  # noqa: E731
        else:
            chosen = lambda m: m.derivation in ("", derivation)  # noqa: E731
        grouped: dict[str, list[dict]] = {}
        for m in rows:
            if chosen(m):
                grouped.setdefault(m.table_name, []).append(m.values)
        return {name: coerce(name, pd.DataFrame(records)) for name, records in grouped.items()}

    def verdicts(self, prediction: str | None = None, session: str | None = None) -> list[VerdictRecord]:
        where = {k: v for k, v in (("prediction", prediction), ("session", session)) if v is not None}
        return self._select(VerdictRecord, (VerdictRecord.created_at, VerdictRecord.id), **where)

    def latest_verdicts(self) -> list[VerdictRecord]:
        """The newest verdict of every (prediction, version, model, corpus, profile)."""
        return latest_verdicts(self.verdicts())

    def adjustments(self) -> dict[int, Adjustment]:
        """The newest adjustment of each verdict, by verdict id."""
        return {a.verdict_id: a for a in self._select(Adjustment, (Adjustment.id,))}

    def calibrations(self) -> dict[tuple[str, str], list[CalibrationRecord]]:
        """The newest rate of each (prediction, version, kind, name), grouped by (prediction, version)."""
        newest = {(c.prediction, c.version, c.kind, c.name): c
                  for c in self._select(CalibrationRecord, (CalibrationRecord.id,))}
        grouped: dict[tuple[str, str], list[CalibrationRecord]] = {}
        for c in newest.values():
            grouped.setdefault((c.prediction, c.version), []).append(c)
        return grouped


def latest_verdicts(verdicts: list[VerdictRecord]) -> list[VerdictRecord]:
    """Of verdicts in the order written, the newest of every (prediction, version, model, corpus, profile)."""
    latest = {(v.prediction, v.version, v.model, v.corpus_hash, v.profile): v for v in verdicts}
    return sorted(latest.values(), key=lambda v: (v.prediction, v.model, v.corpus, v.profile, v.created_at))


def _sqlite_pragmas_read_only(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={_BUSY_SECONDS * 1000}")
    cursor.close()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={_BUSY_SECONDS * 1000}")
    _switch_to_wal(cursor)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _switch_to_wal(cursor) -> None:
    """Put the store in WAL mode (a no-op once its file is). The switch of a new file needs it exclusively: when
    several processes open a new store at once, SQLite answers the switches that lose the race "database is
    locked" at once, without waiting for the busy timeout (its deadlock avoidance: each holds the file shared
    while it asks for it whole; 14 of 320 such opens here). So the switch is tried again, after a short random
    pause, until the busy timeout has passed."""
    deadline = time.monotonic() + _BUSY_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.005, 0.05))


@dataclass
class ProtocolLog:
    """The one writer of the protocol log: each step of one session (a pytest run, a CLI call), in order."""

    store: Store
    session: str

    def event(self, action: str, *, instrument: str, model: str, corpus_hash: str, prediction: str | None = None,
              run_id: str | None = None, spec_key: str = "", reason: str = "") -> ProtocolEvent:
        """One step of this session, not yet written (``Store.write_run`` writes it with its run)."""
        return ProtocolEvent(session=self.session, prediction=prediction, instrument=instrument, model=model,
                             corpus_hash=corpus_hash, action=action, run_id=run_id, spec_key=spec_key, reason=reason)

    def write(self, action: str, **fields) -> None:
        """Write one step of this session now (see ``event`` for the fields)."""
        self.store.write_event(self.event(action, **fields))


public("atlas", Judgment, Store)
