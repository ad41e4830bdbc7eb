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
on every Atlas table. Schema creation is safe when many processes open a new store
at once: on PostgreSQL it runs in one transaction under an advisory lock; on SQLite
each step only adds what is missing and a step lost to another process is retried.
SQLite connections use WAL and a busy timeout so several writers can work at once.

A run's tables come in two kinds. *Measured* tables are what the instrument
returned. *Summary* tables (per-domain perplexities, per-layer CIs ...) are derived
from the run's primary table under summary settings (bootstrap resamples, seed):
each derivation is a ``Derivation`` row with its own key, and its tables are
measurement rows tagged with that key, so a new number of resamples appends a
derivation to the stored run instead of measuring again. ``Store.tables`` returns
every table with the dtypes its schema declares (``atlas._schema.coerce``): a table
read back equals the one written, dtypes included.

A database made by an earlier Atlas gains the columns added since (nullable, or with
their default) when it is opened; nothing else about it changes.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import pandas as pd
from sqlalchemy import JSON, Column, event, inspect, text
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
)
from sqlmodel import Field, Session, SQLModel, create_engine, select

from ._errors import StoreUrlError
from ._jsonsafe import json_safe
from ._public import public
from ._schema import coerce
from ._urls import check_store_url, error_line, shown_url

__all__ = ["Adjustment", "CalibrationRecord", "Derivation", "Judgment", "Measurement", "ProtocolEvent", "ProtocolLog", "Run",
           "SESSION_COMPLETE", "Store", "VerdictRecord", "check_store_url", "shown_url", "utcnow"]

#: every Atlas table and its primary key: the append-only rule covers each
_APPEND_ONLY = {"run": "id", "measurement": "id", "derivation": "key", "verdictrecord": "id", "protocolevent": "id",
                "judgment": "id", "adjustment": "id", "calibrationrecord": "id"}
#: the protocol-log action that closes a pytest session: verdicts of a session without it are partial
SESSION_COMPLETE = "session complete"
#: the key of the PostgreSQL advisory lock schema creation holds (any fixed 64-bit number: "atlas" in ASCII)
_SCHEMA_LOCK = 0x61746C6173


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Run(SQLModel, table=True):
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


class Derivation(SQLModel, table=True):
    """Summary tables derived from a run's primary table under summary settings (e.g. bootstrap resamples)."""

    key: str = Field(primary_key=True)  # atlas._cisp.SummarySpec.key
    run_id: str = Field(foreign_key="run.id", index=True)
    settings: dict = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class VerdictRecord(SQLModel, table=True):
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


class Adjustment(SQLModel, table=True):
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


class CalibrationRecord(SQLModel, table=True):
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


class ProtocolEvent(SQLModel, table=True):
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


class Judgment(SQLModel, table=True):
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


def _add_rows(session: Session, run_id: str, tables: dict[str, pd.DataFrame], derivation: str) -> None:
    for name, df in tables.items():
        for i, record in enumerate(df.to_dict(orient="records")):
            values = json_safe(record)  # NaN as null; ±inf and other objects refused (schemas refuse them first)
            session.add(Measurement(run_id=run_id, table_name=name, row=i, values=values, derivation=derivation))


def _prepare(engine, sqlite: bool, attempts: int = 20) -> None:
    """Create the tables, add the columns an older database lacks, install the append-only triggers.

    Several processes may open a new store at the same moment (pytest-xdist workers, parallel
    ``atlas measure``). PostgreSQL takes an advisory lock and does it all in one transaction (its DDL
    is transactional), so the processes queue and the first one creates everything. SQLite has no such
    lock: each step only adds what is missing, so a step that loses the race to another process
    ("already exists", "duplicate column", "locked") is simply taken again."""
    if not sqlite:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            SQLModel.metadata.create_all(conn)
            _add_missing_columns(conn)
            _postgres_triggers(conn)
        return
    for attempt in range(attempts):
        try:
            SQLModel.metadata.create_all(engine)
            with engine.begin() as conn:
                _add_missing_columns(conn)
            with engine.begin() as conn:
                _sqlite_triggers(conn)
            return
        except (OperationalError, ProgrammingError, IntegrityError) as exc:
            lost_race = any(s in str(exc).lower() for s in ("already exists", "duplicate", "locked"))
            if not lost_race or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def _sqlite_triggers(conn) -> None:
    """UPDATE and DELETE refused; an INSERT whose key exists refused too, so ``INSERT OR REPLACE`` (which
    would delete the old row without firing a DELETE trigger) cannot rewrite a row."""
    refuse = "BEGIN SELECT RAISE(ABORT, 'the Atlas store is append-only'); END"
    for table, key in _APPEND_ONLY.items():
        for op in ("UPDATE", "DELETE"):
            conn.execute(text(f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} {refuse}"))
        conn.execute(text(f"CREATE TRIGGER IF NOT EXISTS {table}_no_replace BEFORE INSERT ON {table} "
                          f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {key} = NEW.{key}) {refuse}"))


def _postgres_triggers(conn) -> None:
    """UPDATE, DELETE (row triggers: also what an upsert's DO UPDATE or an ORM merge would do) and TRUNCATE
    (a statement trigger) refused on every Atlas table. ``INSERT ... ON CONFLICT`` is refused by the primary key."""
    conn.execute(text(
        "CREATE OR REPLACE FUNCTION atlas_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'the Atlas store is append-only: % on % refused', TG_OP, TG_TABLE_NAME; END $$"))
    present = set(conn.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")).scalars())
    for table in _APPEND_ONLY:  # only what is missing: CREATE TRIGGER locks the table against writers
        for name, when, each in ((f"{table}_append_only", "UPDATE OR DELETE", "ROW"),
                                 (f"{table}_no_truncate", "TRUNCATE", "STATEMENT")):
            if name not in present:
                conn.execute(text(f"CREATE TRIGGER {name} BEFORE {when} ON {table} FOR EACH {each} "
                                  "EXECUTE FUNCTION atlas_append_only()"))


def _add_missing_columns(conn) -> None:
    """Bring a database made by an earlier Atlas up to the current tables: add the columns it lacks.

    Only additions: a new column is nullable, or takes its field's default for the rows already there."""
    existing = inspect(conn)
    for table in SQLModel.metadata.sorted_tables:
        if not existing.has_table(table.name):
            continue
        have = {c["name"] for c in existing.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            default = getattr(column.default, "arg", None) if column.default is not None else None
            if callable(default):
                default = default(None) if default.__code__.co_argcount else default()
            kind = column.type.compile(dialect=conn.dialect)
            clause = "" if default is None else f" DEFAULT {_sql_literal(default)}"
            conn.execute(text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}{clause}'))


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


class Store:
    """Append-only access to an Atlas database.

    >>> store = Store("sqlite://")          # in memory
    >>> store.latest_verdicts()
    []
    """

    def __init__(self, url: str):
        parsed = check_store_url(url)
        self.url = parsed  # a URL object: its str() and repr() mask the password
        self.shown_url = shown_url(parsed)
        sqlite = parsed.get_backend_name() == "sqlite"
        try:
            self.engine = create_engine(parsed, json_serializer=_strict_json,
                                        connect_args={"timeout": 60} if sqlite else {"connect_timeout": 10})
        except (ArgumentError, NoSuchModuleError) as exc:
            raise StoreUrlError(f"{self.shown_url}: {error_line(exc, url)}") from None
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            _prepare(self.engine, sqlite)
        except (OperationalError, DBAPIError) as exc:
            fix = ("check that the file's folder is writable" if sqlite else
                   "check that the server is running and reachable, and the user, password and database name")
            raise StoreUrlError(f"cannot open the store {self.shown_url}: {error_line(exc, url)}; "
                                f"{fix}") from None

    # --- writing -------------------------------------------------------------------------

    def write_run(self, run: Run, tables: dict[str, pd.DataFrame], derivation: Derivation | None = None,
                  summaries: dict[str, pd.DataFrame] | None = None, events: list[ProtocolEvent] = ()) -> str:
        """Write a run, all rows of its measured tables, (optionally) a derivation with its summary tables and
        the protocol-log steps about it, in one transaction; returns the run id."""
        with Session(self.engine, expire_on_commit=False) as session:
            session.add(run)
            session.flush()  # the run row first: measurements reference it
            _add_rows(session, run.id, tables, "")
            if derivation is not None:
                session.add(derivation)
                _add_rows(session, run.id, summaries or {}, derivation.key)
            session.add_all(events)
            session.commit()
        return run.id

    def write_runs(self, runs: list[tuple[Run, dict[str, pd.DataFrame]]], judgments: list[Judgment] = ()) -> None:
        """Write several runs, their tables and judgments about them in one transaction (an imported sheet)."""
        with Session(self.engine, expire_on_commit=False) as session:
            for run, tables in runs:
                session.add(run)
                session.flush()
                _add_rows(session, run.id, tables, "")
            session.add_all(judgments)
            session.commit()

    def write_derivation(self, derivation: Derivation, summaries: dict[str, pd.DataFrame]) -> None:
        """Append a derivation of a stored run and its summary tables, in one transaction."""
        with Session(self.engine, expire_on_commit=False) as session:
            session.add(derivation)
            _add_rows(session, derivation.run_id, summaries, derivation.key)
            session.commit()

    def write_judgment(self, judgment: Judgment) -> Judgment:
        return self._add(judgment)

    def write_verdict(self, verdict: VerdictRecord) -> None:
        # evidence is a record of what was seen: a non-finite number in it is "no number" (null)
        verdict.effect, verdict.ci_low, verdict.ci_high, verdict.evidence = json_safe(
            [verdict.effect, verdict.ci_low, verdict.ci_high, verdict.evidence], lenient=True)
        self._add(verdict)

    def write_event(self, event: ProtocolEvent) -> None:
        self._add(event)

    def write_all(self, rows: list[SQLModel]) -> None:
        """Append rows (adjustments of one session, rates of one calibration) in one transaction: all or none."""
        with Session(self.engine, expire_on_commit=False) as session:
            session.add_all(rows)
            session.commit()

    def _add(self, row: SQLModel) -> SQLModel:
        """Append one row in its own transaction."""
        with Session(self.engine, expire_on_commit=False) as session:
            session.add(row)
            session.commit()
        return row

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


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


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
