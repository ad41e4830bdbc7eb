"""CISP sequencing and isolation: declared inputs, reuse and staleness, refusal, the protocol log."""

import dataclasses

import pytest
import torch

from atlas import INSTRUMENTS, IsolationBreach, Store, load_model, run_instrument
from atlas._store import SESSION_COMPLETE

MODULE = '''
import pytest
from atlas import Criterion

CRITERION = Criterion("mean ppl", ">", 1.0)

@pytest.mark.prediction(id="T-undeclared", claim="measures what it did not declare", needs=("perplexity",),
                        criterion=CRITERION)
def test_undeclared(prediction):
    prediction.evidence["coupling"]

@pytest.mark.prediction(id="T-declared", claim="uses what it declared", needs=("perplexity",),
                        criterion=CRITERION)
def test_declared(prediction):
    ppl = prediction.evidence["perplexity"]["perplexity_domains"]["ppl"]
    prediction.conclude(effect=float(ppl.mean()), ci=(float(ppl.min()), float(ppl.max())), n=len(ppl))
'''


@pytest.fixture
def project(prediction_project):
    return prediction_project(MODULE, 2, "--atlas-model=tiny-gpt2")


def test_undeclared_inputs_are_refused_and_declared_ones_gathered_first(project):
    pytester, db, args = project
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1, failed=1)
    assert "CISP refuses T-undeclared" in result.stdout.str()
    events = [(e.prediction, e.instrument, e.action) for e in Store(db).events()]
    assert events[0] == ("T-undeclared", "perplexity", "measured")  # gathered before the body ran
    assert ("T-undeclared", "coupling", "refused") in events
    assert ("T-declared", "perplexity", "reused") in events
    assert not [r for r in Store(db).runs() if r.instrument == "coupling"]


def test_a_failed_input_refuses_the_prediction(project, monkeypatch):
    pytester, db, args = project
    real = INSTRUMENTS["perplexity"]
    monkeypatch.setitem(INSTRUMENTS, "perplexity", dataclasses.replace(
        real, measure=lambda *a, **k: {"perplexity": real.measure(*a, **k)["perplexity"].assign(ppl=-1.0)}))
    result = pytester.runpytest(*args, "-k", "declared and not undeclared")
    result.assert_outcomes(skipped=1)
    [verdict] = Store(db).latest_verdicts()
    assert verdict.outcome == "not_run" and "refused by CISP" in verdict.reason and "SchemaViolation" in verdict.reason
    actions = [e.action for e in Store(db).events()]
    assert actions == ["failed", "refused", SESSION_COMPLETE]  # the session ended by itself: it is closed


def test_reuse_hits_on_identical_settings_misses_on_changed_ones_and_names_stale_runs(store, tiny_gpt2, starter,
                                                                                     monkeypatch):
    corpus = starter.sample(1)
    first = run_instrument(store, tiny_gpt2, corpus, "perplexity", progress=False, session="s")
    assert run_instrument(store, tiny_gpt2, corpus, "perplexity", progress=False, session="s").reused
    assert not run_instrument(store, tiny_gpt2, corpus, "perplexity", progress=False, session="s",
                              batch_size=2).reused
    old = INSTRUMENTS["perplexity"].version
    monkeypatch.setitem(INSTRUMENTS, "perplexity", dataclasses.replace(INSTRUMENTS["perplexity"], version="next"))
    again = run_instrument(store, tiny_gpt2, corpus, "perplexity", progress=False, session="s")
    assert not again.reused and again.run.instrument_version == "next"
    log = store.events("s")
    assert [e.action for e in log] == ["measured", "reused", "measured", "measured"]
    assert log[1].run_id == first.run.id and "stale" in log[3].reason and f"instrument v{old}, now vnext" in log[3].reason


def test_a_model_changed_outside_cisp_is_refused_before_measuring(store, starter):
    lm = load_model("tiny-gpt2", device="cpu")  # a private copy: this test damages it
    with torch.no_grad():
        next(lm.model.parameters()).mul_(2)
    with pytest.raises(IsolationBreach, match="changed after it was loaded"):
        run_instrument(store, lm, starter.sample(1), "perplexity", progress=False)
    [run] = store.runs()
    assert run.status == "failed" and store.tables(run.id) == {}


def test_an_instrument_that_leaves_the_attention_implementation_switched_is_caught(store, starter, monkeypatch):
    lm = load_model("tiny-gpt2", device="cpu")
    real = INSTRUMENTS["perplexity"]

    def switching(lm, corpus, **settings):
        lm.model.set_attn_implementation("sdpa")
        return real.measure(lm, corpus, **settings)

    monkeypatch.setitem(INSTRUMENTS, "perplexity", dataclasses.replace(real, measure=switching))
    with pytest.raises(IsolationBreach, match="attention implementation"):
        run_instrument(store, lm, starter.sample(1), "perplexity", progress=False)
