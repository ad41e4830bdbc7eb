"""Crashes never look like refutations: inputs a prediction cannot use make it "not run: refused", with the
reason, and pytest shows a skip, never FAILED or ERROR.

The cases: a model with non-finite weights (refused before measuring), an instrument that raises an error
of its own (a bug, or weights it cannot handle: "array must not contain infs or NaNs"), and an instrument
that returns an empty table (refused by its schema, never stored as a complete run to be reused).
"""

import dataclasses
import math

import pytest
import torch
from _support import record

from atlas import INSTRUMENTS, Store, load_model

pytestmark = pytest.mark.reliability

MODULE = '''
import pytest
from atlas import Criterion

@pytest.mark.prediction(id="T-ppl", claim="perplexity exceeds 1", needs=("perplexity",),
                        criterion=Criterion("mean ppl", ">", 1.0))
def test_ppl(prediction):
    ppl = prediction.evidence["perplexity"]["perplexity_domains"]["ppl"]
    prediction.conclude(effect=float(ppl.mean()), ci=(float(ppl.min()), float(ppl.max())), n=len(ppl))
'''


@pytest.fixture
def project(prediction_project):
    return prediction_project(MODULE, 1)


def not_run_refused(pytester, db, args, *words):
    result = pytester.runpytest(*args)
    result.assert_outcomes(skipped=1)
    [verdict] = Store(db).latest_verdicts()
    assert verdict.outcome == "not_run" and "refused by CISP" in verdict.reason
    for word in words:
        assert word in verdict.reason, verdict.reason
    record("crashing inputs shown as not run: refused (never FAILED)", 1)
    return verdict


def test_a_model_with_non_finite_weights(project, tmp_path):
    pytester, db, args = project
    lm = load_model("tiny-gpt2", device="cpu")
    with torch.no_grad():
        lm.model.transformer.wte.weight[5, 0] = math.inf
    lm.model.save_pretrained(tmp_path / "inf-model")
    lm.tokenizer.save_pretrained(tmp_path / "inf-model")
    not_run_refused(pytester, db, [*args, f"--atlas-model={tmp_path / 'inf-model'}"], "NotFinite", "non-finite weights")
    assert Store(db).runs() == []


def test_an_instrument_that_crashes(project, monkeypatch):
    pytester, db, args = project

    def crash(*a, **k):
        raise ValueError("array must not contain infs or NaNs")

    monkeypatch.setitem(INSTRUMENTS, "perplexity", dataclasses.replace(INSTRUMENTS["perplexity"], measure=crash))
    not_run_refused(pytester, db, [*args, "--atlas-model=tiny-gpt2"], "ValueError", "infs or NaNs")
    [run] = Store(db).runs()
    assert run.status == "failed" and "infs or NaNs" in run.error


def test_an_empty_table_is_not_a_complete_run(project, monkeypatch):
    pytester, db, args = project
    real = INSTRUMENTS["perplexity"]
    monkeypatch.setitem(INSTRUMENTS, "perplexity", dataclasses.replace(
        real, measure=lambda *a, **k: {"perplexity": real.measure(*a, **k)["perplexity"].iloc[:0]}))
    not_run_refused(pytester, db, [*args, "--atlas-model=tiny-gpt2"], "SchemaViolation")
    not_run_refused(pytester, db, [*args, "--atlas-model=tiny-gpt2"], "SchemaViolation")  # and again: nothing reused
    assert [r.status for r in Store(db).runs()] == ["failed", "failed"]
