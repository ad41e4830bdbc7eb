import dataclasses

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, StatementError

from atlas import INSTRUMENTS, IsolationBreach, SchemaViolation, SettingsError, Store, run_instrument
from atlas._cisp import model_checksum
from atlas._store import Run, utcnow


def make_run(**kw):
    fields = dict(instrument="perplexity", instrument_version="1", model="m", model_revision="r", corpus="c",
                  corpus_hash="h", settings={"k": 1}, settings_hash="s", device="cpu", dtype="float32", seed=0,
                  started_at=utcnow(), ended_at=utcnow(), status="complete")
    return Run(**{**fields, **kw})


@settings(max_examples=25, deadline=None)
@given(st.lists(st.fixed_dictionaries({"a": st.integers(-10**9, 10**9), "b": st.floats(allow_nan=False),
                                       "c": st.text()}), min_size=1, max_size=20))
def test_tables_round_trip(rows):
    store = Store("sqlite://")
    run_id = store.write_run(make_run(), {"t": pd.DataFrame(rows)})
    back = store.tables(run_id)["t"]
    pd.testing.assert_frame_equal(back, pd.DataFrame(rows), check_dtype=False)


def test_a_failed_write_leaves_nothing_behind(store):
    bad = pd.DataFrame({"x": [1, object()]})  # the second row cannot be serialised
    with pytest.raises((TypeError, StatementError)):
        store.write_run(make_run(id="crashed"), {"ok": pd.DataFrame({"x": [1, 2]}), "bad": bad})
    assert store.runs() == [] and store.tables("crashed") == {}


def test_store_is_append_only(store):
    store.write_run(make_run(id="r1"), {"t": pd.DataFrame({"x": [1]})})
    for statement in ("UPDATE run SET status='failed'", "DELETE FROM measurement", "DELETE FROM run"):
        with pytest.raises(IntegrityError, match="append-only"), store.engine.begin() as conn:
            conn.execute(text(statement))
    assert store.run("r1").status == "complete"


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
