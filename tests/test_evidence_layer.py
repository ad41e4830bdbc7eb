"""The evidence layer: versions that cover the analysis, one resolved spec per run, summaries with their own
key, typed tables from the store, pairwise models through CISP, read-only evidence, one error tree."""

import dataclasses
import inspect

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import atlas
from atlas import INSTRUMENTS, STARTER_CORPUS, Store, load_model, run_instrument
from atlas._schema import coerce, schema_for, table_names
from atlas.cli import main

# --- versions that cover the analysis -------------------------------------------------------

MODULE = '''
import pytest
from atlas import Criterion

SCALE = 1.0

def mean_ppl(tables):
    return float(tables["perplexity_domains"]["ppl"].mean()) * SCALE

@pytest.mark.prediction(id="T-mean", claim="mean domain perplexity above 1", needs=("perplexity",),
                        criterion=Criterion("mean domain ppl", ">", 1.0))
def test_mean(prediction):
    effect = mean_ppl(prediction.evidence["perplexity"])  # the analysis
    prediction.conclude(effect=effect, ci=(effect - 1, effect + 1), n=3)
'''


@pytest.fixture
def project(pytester):
    corpus = pytester.path / "corpus.jsonl"
    corpus.write_text("".join(line for i, line in enumerate(STARTER_CORPUS.read_text().splitlines(True))
                              if i % 12 < 2), encoding="utf-8")
    db = f"sqlite:///{pytester.path / 'atlas.db'}"
    return pytester, db, ["--atlas-model=tiny-gpt2", f"--atlas-corpus={corpus}", f"--atlas-db={db}",
                          "-p", "no:cacheprovider"]


def run_module(pytester, args, source: str) -> list:
    pytester.makepyfile(test_module=source)
    pytester.runpytest(*args).assert_outcomes(passed=1)
    return Store(args[2].split("=", 1)[1]).verdicts("T-mean")


@pytest.mark.parametrize("edit, new_version", [
    (("# the analysis", "# how the effect is computed"), False),  # a comment
    (('claim="mean domain perplexity above 1"', 'claim="the mean domain perplexity exceeds 1"'), False),
    (("* SCALE", "* SCALE * 2"), True),  # the helper the body calls
    (("SCALE = 1.0", "SCALE = 1.5"), True),  # a constant the helper reads
    (('["ppl"].mean()', '["ppl"].median()'), True),
    (("ci=(effect - 1, effect + 1)", "ci=(effect - 2, effect + 2)"), True),  # the body itself
])
def test_editing_the_analysis_makes_a_new_version_and_keeps_the_old_verdicts(project, edit, new_version):
    pytester, db, args = project
    [first] = run_module(pytester, args, MODULE)
    old, new = edit
    assert old in MODULE
    verdicts = run_module(pytester, args, MODULE.replace(old, new))
    assert len(verdicts) == 2
    assert verdicts[0].id == first.id and verdicts[0].version == first.version  # untouched
    assert (verdicts[1].version != first.version) is new_version
    assert verdicts[1].criterion_hash == first.criterion_hash  # the criterion did not change
    assert verdicts[1].code_version  # the git commit (or "unversioned") of the code


# --- one resolved spec; summaries with their own key ----------------------------------------

def test_new_summary_settings_derive_from_the_stored_run_without_measuring_again(store, tiny_gpt2, starter,
                                                                                 monkeypatch):
    corpus = starter.sample(2)
    first = run_instrument(store, tiny_gpt2, corpus, "perplexity", progress=False, bootstrap_resamples=100)
    calls = []
    real = INSTRUMENTS["perplexity"]
    monkeypatch.setitem(INSTRUMENTS, "perplexity", dataclasses.replace(
        real, measure=lambda *a, **k: calls.append(1) or real.measure(*a, **k)))
    again = run_instrument(store, tiny_gpt2, corpus, "perplexity", progress=False, bootstrap_resamples=300)
    assert again.reused and again.run.id == first.run.id and calls == []  # no forward pass
    assert again.spec.key == first.spec.key and again.summary != first.summary
    pd.testing.assert_frame_equal(again.tables["perplexity"], first.tables["perplexity"])
    assert not again.tables["perplexity_domains"]["ci_low"].equals(first.tables["perplexity_domains"]["ci_low"])
    assert [d.settings["bootstrap_resamples"] for d in store.derivations(first.run.id)] == [100, 300]
    third = run_instrument(store, tiny_gpt2, corpus, "perplexity", progress=False, bootstrap_resamples=300)
    assert len(store.derivations(first.run.id)) == 2  # derived once, then read
    pd.testing.assert_frame_equal(third.tables["perplexity_domains"], again.tables["perplexity_domains"])
    assert len(store.runs()) == 1
    assert {e.spec_key for e in store.events()} == {first.spec.key}  # one key in the log


def test_a_changed_setting_is_a_new_spec_and_a_new_run(store, tiny_gpt2, starter):
    corpus = starter.sample(1)
    a = run_instrument(store, tiny_gpt2, corpus, "perplexity", progress=False)
    b = run_instrument(store, tiny_gpt2, corpus, "perplexity", progress=False, batch_size=2)
    assert a.spec.key != b.spec.key and not b.reused and len(store.runs()) == 2


# --- typed tables -----------------------------------------------------------------------------

def test_reused_and_fresh_tables_compare_equal_dtypes_included(store, tiny, starter):
    corpus = starter.sample(1)
    for name, extra in (("perplexity", {}), ("coupling", {}), ("ablation", {"max_tokens": 64}),
                        ("gradient", {"max_tokens_per_domain": 64}),
                        ("hessian", {"max_tokens": 32, "top_k": 1, "lanczos_steps": 4, "hutchinson_samples": 2,
                                     "slq_runs": 1, "blocks": "attention", "layers": "0"}),
                        ("hessian_coupling", {"max_tokens": 32, "probes": 2, "layers": "1"})):
        fresh = run_instrument(store, tiny, corpus, name, progress=False, bootstrap_resamples=50, **extra)
        reused = run_instrument(store, tiny, corpus, name, progress=False, bootstrap_resamples=50, **extra)
        assert reused.reused and set(reused.tables) == set(fresh.tables) == set(INSTRUMENTS[name].tables)
        for table in fresh.tables:
            pd.testing.assert_frame_equal(reused.tables[table], fresh.tables[table], check_dtype=True)


_VALUES = {"int": st.integers(0, 10**6), "float": st.floats(-1e6, 1e6, allow_nan=False),
           "str": st.text(min_size=1, max_size=12), "bool": st.booleans()}


@st.composite
def rows_of(draw, table: str):
    columns = schema_for(table).columns
    n = draw(st.integers(1, 5))
    return [{c: draw(st.none() | _VALUES[s["type"]]) if s.get("nullable") else draw(_VALUES[s["type"]])
             for c, s in columns.items()} for _ in range(n)]


@settings(max_examples=25, deadline=None)
@given(data=st.data(), table=st.sampled_from([t for t in table_names() if schema_for(t).instrument != "lab"]))
def test_any_table_reads_back_with_its_schema_dtypes(data, table):
    """Write a table of arbitrary schema-typed values (unvalidated: dtypes are the point), read it back."""
    store = Store("sqlite://")
    frame = coerce(table, pd.DataFrame(data.draw(rows_of(table))))
    run_id = store.write_run(_run(), {table: frame})
    pd.testing.assert_frame_equal(store.tables(run_id)[table], frame, check_dtype=True)


def _run():
    return atlas._store.Run(instrument="perplexity", instrument_version="1", model="m", model_revision="r",
                            corpus="c", corpus_hash="h", settings={}, settings_hash="s", device="cpu",
                            dtype="float32", seed=0, started_at=atlas._store.utcnow(),
                            ended_at=atlas._store.utcnow(), status="complete")


# --- the registry is read from the modules and matches the schemas ------------------------------

def test_the_registry_and_the_schemas_name_each_other():
    registry = {t: name for name, inst in INSTRUMENTS.items() for t in inst.tables}
    schemas = {t: schema_for(t).instrument for t in table_names()}
    assert {t: i for t, i in schemas.items() if i in INSTRUMENTS} == registry
    assert set(schemas.values()) - set(INSTRUMENTS) <= {"lab"}  # the Lab's trajectory table is written by training
    for inst in INSTRUMENTS.values():
        params = inspect.signature(inst.measure).parameters
        assert inst.defaults == {k: params[k].default for k in inst.defaults}  # read, never restated
        assert inst.measure.instrument is inst


# --- pairwise instruments get their other model through CISP -----------------------------------

def test_a_rewritten_other_checkpoint_is_a_new_revision_never_a_stale_reuse(store, tmp_path, starter):
    corpus = starter.sample(1)
    lm = load_model("tiny-gpt2", device="cpu")
    other = tmp_path / "other"

    def save(scale: float):
        model = load_model("tiny-gpt2", device="cpu").model
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(scale)
        model.save_pretrained(other)
        lm.tokenizer.save_pretrained(other)

    save(0.9)
    first = run_instrument(store, lm, corpus, "interpolation", other=str(other), points=2, progress=False)
    assert first.run.others["other"]["name"] == str(other)
    assert run_instrument(store, lm, corpus, "interpolation", other=str(other), points=2, progress=False).reused
    save(0.8)
    second = run_instrument(store, lm, corpus, "interpolation", other=str(other), points=2, progress=False)
    assert not second.reused
    assert second.run.others["other"]["revision"] != first.run.others["other"]["revision"]
    assert second.tables["interpolation"]["loss"].iloc[-1] != first.tables["interpolation"]["loss"].iloc[-1]


# --- evidence is read-only ----------------------------------------------------------------------

READ_ONLY = '''
import pytest
from atlas import Criterion

C = Criterion("ppl", ">", 0.0)

@pytest.mark.prediction(id="T-a-vandal", claim="c", needs=("perplexity",), criterion=C)
def test_a(prediction):
    tables = prediction.evidence["perplexity"]
    tables["perplexity"]["ppl"] = -1.0
    with pytest.raises(TypeError):
        tables["perplexity"] = None
    prediction.conclude(effect=1.0, ci=(0.5, 1.5), n=1)

@pytest.mark.prediction(id="T-b-reader", claim="c", needs=("perplexity",), criterion=C)
def test_b(prediction):
    ppl = prediction.evidence["perplexity"]["perplexity"]["ppl"]
    assert (ppl > 0).all()
    prediction.conclude(effect=float(ppl.min()), ci=(float(ppl.min()), float(ppl.max())), n=len(ppl))

@pytest.mark.prediction(id="T-c-silent", claim="c", needs=("perplexity",), criterion=C)
def test_c(prediction):
    return  # no verdict: never a pass
'''


def test_evidence_is_read_only_and_a_body_without_a_verdict_never_passes(project):
    pytester, db, args = project
    pytester.makepyfile(test_module=READ_ONLY)
    result = pytester.runpytest(*args)
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 2 and outcomes.get("no_verdict") == 1, result.stdout.str()
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*NO VERDICT T-c-silent*"])
    assert {v.prediction for v in Store(db).verdicts()} == {"T-a-vandal", "T-b-reader"}


# --- one error tree -------------------------------------------------------------------------------

def test_every_error_atlas_raises_on_purpose_is_an_atlas_error():
    for name in ("CorpusError", "SheetError", "SchemaViolation", "SettingsError", "VocabularyError",
                 "JudgmentError", "StoreUrlError"):
        assert issubclass(getattr(atlas, name), atlas.BadInput) and issubclass(getattr(atlas, name), ValueError)
    for name in ("ModelUnavailable", "HardwareUnavailable"):
        assert issubclass(getattr(atlas, name), atlas.Unavailable)
    for name in ("IsolationBreach", "SequencingRefused"):
        assert issubclass(getattr(atlas, name), atlas.Refused)
    assert all(issubclass(getattr(atlas, n), atlas.AtlasError) for n in ("BadInput", "Unavailable", "Refused"))


def test_the_cli_gives_bad_input_one_line_and_exit_2_and_a_bug_its_traceback(monkeypatch):
    bad = CliRunner().invoke(main, ["measure", "perplexity", "--model", "tiny-gpt2", "--bos-policy", "first",
                                    "--db", "sqlite://"])
    assert bad.exit_code == 2 and "'first' is not one of 'prepend', 'none'" in bad.output
    assert "Traceback" not in bad.output
    with pytest.raises(atlas.SettingsError, match="unknown bos_policy 'first': use prepend or none"):
        run_instrument(Store("sqlite://"), load_model("tiny-gpt2", device="cpu"), atlas.load_corpus("starter"),
                       "perplexity", bos_policy="first")

    def broken(*a, **k):
        raise ZeroDivisionError("a genuine bug")

    monkeypatch.setitem(INSTRUMENTS, "perplexity", dataclasses.replace(INSTRUMENTS["perplexity"], measure=broken))
    bug = CliRunner().invoke(main, ["measure", "perplexity", "--model", "tiny-gpt2", "--db", "sqlite://"])
    assert isinstance(bug.exception, ZeroDivisionError)  # not swallowed into a one-line message

