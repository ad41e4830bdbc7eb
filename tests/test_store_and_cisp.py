import dataclasses
import sqlite3

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, InternalError, ProgrammingError, StatementError
from sqlmodel import Session

from atlas import INSTRUMENTS, IsolationBreach, SchemaViolation, SettingsError, Store, run_instrument
from atlas._cisp import model_checksum
from atlas._store import Run, _switch_to_wal, shown_url, utcnow


@pytest.fixture
def store(any_store):
    """Every test of this module runs on SQLite and on PostgreSQL (skipped without a server)."""
    return any_store


def make_run(**kw):
    fields = dict(instrument="perplexity", instrument_version="1", model="m", model_revision="r", corpus="c",
                  corpus_hash="h", settings={"k": 1}, settings_hash="s", device="cpu", dtype="float32", seed=0,
                  started_at=utcnow(), ended_at=utcnow(), status="complete")
    return Run(**{**fields, **kw})


@settings(max_examples=25, deadline=None)
@given(st.lists(st.fixed_dictionaries({"a": st.integers(-10**9, 10**9),
                                       "b": st.floats(allow_nan=False, allow_infinity=False),  # strict JSON
                                       "c": st.text()}), min_size=1, max_size=20))
def test_tables_round_trip(rows):
    store = Store("sqlite://")
    run_id = store.write_run(make_run(), {"t": pd.DataFrame(rows)})
    back = store.tables(run_id)["t"]
    pd.testing.assert_frame_equal(back, pd.DataFrame(rows), check_dtype=False)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.fixed_dictionaries({"a": st.integers(-2**63, 2**63 - 1), "b": st.floats(allow_infinity=False),
                                       "c": st.text(st.characters(blacklist_categories=("Cs",)))}),
                min_size=1, max_size=20))
def test_what_is_written_verifies_as_it_is_read_back(rows):
    """A run's seal is taken over its rows as the store gives them back (NaN as null, any float, any text),
    so a store holding them verifies, and reuse trusts it."""
    store = Store("sqlite://")
    run_id = store.write_run(make_run(), {"t": pd.DataFrame(rows)})
    assert store.verify().ok and store.check(store.run(run_id)) == ""


def test_seals_verify_on_both_backends(store):
    """Every sealed table, with values whose stored form differs from the written one: a time in another zone,
    an integer given as a float, numpy numbers, NaN in a verdict's evidence, tuples in JSON, text beyond ASCII."""
    from datetime import datetime, timedelta, timezone

    import numpy as np

    from atlas._store import Adjustment, CalibrationRecord, Derivation, Judgment, ProtocolEvent, VerdictRecord

    later = datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    store.write_run(make_run(id="r1", started_at=later, settings={"k": (1, 2.5), "é": "ü"}),
                    {"t": pd.DataFrame({"x": np.arange(3), "y": [0.1, np.nan, 1e-300], "z": ["a", "ß", "∂"]})},
                    Derivation(key="d1", run_id="r1", settings={"n": 10}), {"s": pd.DataFrame({"y": [2.0]})},
                    events=[ProtocolEvent(session="s", instrument="i", model="m", corpus_hash="h", action="measured")])
    store.write_verdict(VerdictRecord(prediction="P", version="v", form="general", claim="c", source="s", model="m",
                                      outcome="supported", criterion={"t": 1.5}, criterion_hash="h", run_ids=["r1"],
                                      effect=np.float64(1.25), n=np.int64(7), evidence={"p": float("nan")}))
    store.write_all([Adjustment(verdict_id=1, session="s", family=2, p_adjusted=0.04, outcome="supported"),
                     CalibrationRecord(prediction="P", version="v", kind="null", name="n", rate=0.05, mc_error=0.01,
                                       reps=3.0, profile="quick", resamples=100, seed=0)])
    store.write_judgment(Judgment(target_kind="run", target_id="r1", field="f", value="v", by="b"))
    result = store.verify()
    assert result.ok, result.lines()
    assert sum(result.records.values()) == 7 and store.check(store.run("r1")) == store.check(store.derivation("d1")) == ""


def test_concurrent_writers_keep_one_chain(tmp_path):
    """Writers queue on the store's write lock: every record is chained after the last one, none forks it."""
    from concurrent.futures import ThreadPoolExecutor

    from atlas._store import ProtocolEvent

    store = Store(f"sqlite:///{tmp_path / 'atlas.db'}")

    def write(i):
        store.write_event(ProtocolEvent(session=str(i), instrument="i", model="m", corpus_hash="h", action="x"))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(64)))
    result = store.verify()
    assert result.ok and result.records["protocolevent"] == 64, result.lines()
    assert sorted(e.chain_seq for e in store.events()) == list(range(64))


def test_a_store_an_older_atlas_made_gains_the_columns_added_since(tmp_path):
    """A writable store that lacks a column added since (here the runs' seal) is brought up to date when opened,
    and opened; read-only, it is refused in one line naming the fix."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    Store(url).engine.dispose()
    with Store(url).engine.begin() as conn:
        conn.execute(text("ALTER TABLE run DROP COLUMN content_hash"))
    with pytest.raises(Exception, match="open it once writable"):
        Store(url + "?mode=ro")
    store = Store(url)
    assert store.gaps == {} and store.runs() == [] and store.verify().ok


def test_a_failed_write_leaves_nothing_behind(store):
    bad = pd.DataFrame({"x": [1, object()]})  # the second row cannot be serialised
    with pytest.raises((TypeError, StatementError)):
        store.write_run(make_run(id="crashed"), {"ok": pd.DataFrame({"x": [1, 2]}), "bad": bad})
    assert store.runs() == [] and store.tables("crashed") == {}


APPEND_ONLY_TABLES = ("run", "measurement", "derivation", "verdictrecord", "protocolevent", "judgment")


def test_store_is_append_only_on_both_backends(store):
    """UPDATE, DELETE, TRUNCATE, INSERT OR REPLACE, an upsert and the ORM's merge and delete: each refused by
    the database itself, on every Atlas table, and nothing changed. (Row triggers fire per row: every table
    holds one.)"""
    from atlas._store import Derivation, Judgment, ProtocolEvent, VerdictRecord

    store.write_run(make_run(id="r1"), {"t": pd.DataFrame({"x": [1]})}, Derivation(key="d1", run_id="r1"),
                    {"s": pd.DataFrame({"y": [2]})},
                    events=[ProtocolEvent(session="s", instrument="i", model="m", corpus_hash="h", action="measured")])
    store.write_verdict(VerdictRecord(prediction="P", version="v", form="general", claim="c", source="s", model="m",
                                      outcome="supported", criterion={}, criterion_hash="h"))
    store.write_judgment(Judgment(target_kind="run", target_id="r1", field="f", value="v", by="b"))
    sqlite = store.engine.dialect.name == "sqlite"
    statements = ["UPDATE run SET status='failed'", "DELETE FROM measurement", "DELETE FROM run",
                  *[f"DELETE FROM {t}" for t in APPEND_ONLY_TABLES]]
    statements += (["INSERT OR REPLACE INTO run SELECT * FROM run",
                    "REPLACE INTO measurement SELECT * FROM measurement"] if sqlite else
                   [*[f"TRUNCATE {t} CASCADE" for t in APPEND_ONLY_TABLES],
                    "INSERT INTO run SELECT * FROM run ON CONFLICT (id) DO UPDATE SET status = 'failed'"])
    for statement in statements:
        with pytest.raises((IntegrityError, InternalError, ProgrammingError), match="append-only"), \
                store.engine.begin() as conn:
            conn.execute(text(statement))
    for change in (lambda s: s.delete(s.get(Run, "r1")), lambda s: s.merge(make_run(id="r1", status="failed"))):
        with pytest.raises((IntegrityError, InternalError, ProgrammingError), match="append-only"), \
                Session(store.engine) as session:
            change(session)
            session.commit()
    assert store.run("r1").status == "complete" and len(store.tables("r1")["t"]) == 1


def test_runs_record_provenance_and_are_reused_only_on_identical_settings(store, tiny_gpt2, starter):
    corpus = starter.sample(1)
    first = run_instrument(store, tiny_gpt2, corpus, "perplexity", progress=False, bootstrap_resamples=100)
    run = first.run
    assert not first.reused and run.status == "complete"
    assert run.model_revision == "gpt2 random-init seed=0" and run.corpus_hash == corpus.hash
    assert run.settings["bos_policy"] == "prepend" and run.dtype == "float32" and "torch" in run.packages
    again = run_instrument(store, tiny_gpt2, corpus, "perplexity", progress=False, bootstrap_resamples=100)
    assert again.reused and again.run.id == run.id
    pd.testing.assert_frame_equal(again.tables["perplexity"], first.tables["perplexity"], check_dtype=False)
    other = run_instrument(store, tiny_gpt2, corpus, "perplexity", progress=False, bootstrap_resamples=100,
                           bos_policy="none")
    assert not other.reused


def test_unknown_setting_is_refused(store, tiny_gpt2, starter):
    with pytest.raises(SettingsError, match="no setting"):
        run_instrument(store, tiny_gpt2, starter, "perplexity", bos="none")


def test_a_table_failing_its_schema_is_stored_as_a_failed_run_without_rows(store, tiny_gpt2, starter, monkeypatch):
    real = INSTRUMENTS["perplexity"]
    broken = dataclasses.replace(
        real, measure=lambda *a, **k: {"perplexity": real.measure(*a, **k)["perplexity"].assign(ppl=-1.0)})
    monkeypatch.setitem(INSTRUMENTS, "perplexity", broken)
    with pytest.raises(SchemaViolation):
        run_instrument(store, tiny_gpt2, starter.sample(1), "perplexity", progress=False)
    [run] = store.runs()
    assert run.status == "failed" and "SchemaViolation" in run.error and store.tables(run.id) == {}


def test_an_instrument_that_changes_the_model_is_caught(store, starter, monkeypatch):
    from atlas import load_model

    lm = load_model("tiny-gpt2", device="cpu")  # a private copy: this test damages it

    def mutating(lm, corpus, progress=True, **settings):
        with torch.no_grad():
            next(lm.model.parameters()).add_(1e-3)
        return INSTRUMENTS_REAL.measure(lm, corpus, progress=progress, **settings)

    INSTRUMENTS_REAL = INSTRUMENTS["perplexity"]
    monkeypatch.setitem(INSTRUMENTS, "perplexity", dataclasses.replace(INSTRUMENTS_REAL, measure=mutating))
    before = model_checksum(lm.model)
    with pytest.raises(IsolationBreach):
        run_instrument(store, lm, starter.sample(1), "perplexity", progress=False)
    assert model_checksum(lm.model) != before
    [run] = store.runs()
    assert run.status == "failed" and store.tables(run.id) == {}


def test_perplexity_leaves_the_model_as_it_found_it(store, tiny, starter):
    before = model_checksum(tiny.model)
    run_instrument(store, tiny, starter.sample(1), "perplexity", progress=False, bootstrap_resamples=50)
    assert model_checksum(tiny.model) == before and not tiny.model.training


def test_urls_are_shown_with_the_password_masked():
    url = "postgresql+psycopg://atlas:s3cret@db.lab:5432/atlas"
    assert shown_url(url) == "postgresql+psycopg://atlas:***@db.lab:5432/atlas"
    assert "s3cret" not in shown_url("not-a-url://atlas:s3cret@host")  # unparsable: masked all the same
    assert "s3cret" not in shown_url(":::atlas:s3cret@")
    store = Store("sqlite://")
    assert store.shown_url == "sqlite://" and str(store.url) == "sqlite://"


def test_non_finite_numbers_never_reach_a_json_column(store):
    """Evidence is strict JSON (NaN and ±inf stored as null); a table holding ±inf is refused by the
    serializer itself (schemas refuse it earlier)."""
    from atlas._store import VerdictRecord

    store.write_verdict(VerdictRecord(prediction="P", version="v", form="general", claim="c", source="s", model="m",
                                      outcome="supported", criterion={}, criterion_hash="h", effect=float("inf"),
                                      evidence={"a": float("nan"), "b": [float("-inf"), 1.5], "c": {"d": 2}}))
    [v] = store.verdicts()
    assert v.evidence == {"a": None, "b": [None, 1.5], "c": {"d": 2}} and v.effect is None
    with pytest.raises((ValueError, StatementError)):
        store.write_run(make_run(id="inf"), {"t": pd.DataFrame({"x": [float("inf")]})})
    assert store.run("inf") is None


@pytest.mark.parametrize("column, value, expectation", [
    ("nll_sum", float("inf"), "to_be_between"), ("ppl", float("-inf"), "to_be_between"),
    ("bits_per_byte", float("inf"), "to_be_between"), ("n_bytes", float("nan"), "to_not_be_null")])
def test_every_numeric_column_is_finite_unless_its_schema_allows_it(column, value, expectation):
    from atlas._schema import validate_table

    table = pd.DataFrame({"passage_id": ["a"], "domain": ["d"], "n_tokens": [3], "n_bytes": [3], "nll_sum": [1.0],
                          "ppl": [2.0], "bits_per_byte": [0.5]}).astype({column: object})
    table.loc[0, column] = value
    with pytest.raises(SchemaViolation, match=f"expect_column_values_{expectation} on {column}"):
        validate_table("perplexity", table)


def test_an_empty_table_is_refused_unless_its_schema_allows_it():
    from atlas._schema import validate_table

    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in ("passage_id", "domain", "n_tokens", "n_bytes",
                                                               "nll_sum", "ppl", "bits_per_byte")})
    with pytest.raises(SchemaViolation, match="row_count"):
        validate_table("perplexity", empty)


def test_every_schema_column_says_what_it_holds():
    """Every column of every exported table has a non-empty description (schema/*.yaml): a reader of a table
    learns what each column holds, and in which unit, from its schema."""
    from atlas._schema import schema_for, table_names

    silent = [f"{table}.{column}" for table in table_names()
              for column, spec in schema_for(table).columns.items()
              if not isinstance(spec.get("description"), str) or not spec["description"].strip()]
    assert silent == [], f"columns without a description: {silent}"


def test_a_huge_verdict_id_is_no_verdict(store):
    assert store.verdict(10**30) is None and store.verdict(-(10**30)) is None


class _RacedCursor:
    """A cursor whose switch to WAL loses the race of a new store's first opens ``losses`` times, as SQLite
    answers it: "database is locked" at once, whatever the busy timeout."""

    def __init__(self, losses: int, error: str = "database is locked"):
        self.losses, self.error, self.tries = losses, error, 0

    def execute(self, statement: str):
        assert statement == "PRAGMA journal_mode=WAL"
        self.tries += 1
        if self.tries <= self.losses:
            raise sqlite3.OperationalError(self.error)


def test_a_switch_to_wal_that_loses_the_first_use_race_is_tried_again():
    cursor = _RacedCursor(losses=3)
    _switch_to_wal(cursor)
    assert cursor.tries == 4


def test_a_switch_to_wal_that_fails_otherwise_is_not_tried_again():
    cursor = _RacedCursor(losses=1, error="disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        _switch_to_wal(cursor)
    assert cursor.tries == 1
