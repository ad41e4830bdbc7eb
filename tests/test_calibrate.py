"""`atlas calibrate`: a prediction's own body judges simulated evidence; rates are reproducible, stored with the
prediction's version, and shown beside its verdicts in the report."""

import json

import numpy as np
import pandas as pd
from click.testing import CliRunner

from atlas import Store
from atlas.cli import main

MODULE = '''
import numpy as np
import pandas as pd
import pytest
from atlas import Criterion, bootstrap_ci

def null(rng):
    return {"perplexity": {"perplexity": pd.DataFrame({"nll_sum": rng.normal(0.0, 1.0, 12)})}}

def shifted(rng):
    return {"perplexity": {"perplexity": pd.DataFrame({"nll_sum": rng.normal(1.0, 1.0, 12)})}}

@pytest.mark.prediction(id="T-mean", claim="the mean is above 0", needs=("perplexity",),
                        criterion=Criterion("mean", ">", 0.0), nulls={"centred normal": null}, alternative=shifted)
def test_mean(prediction):
    x = prediction.evidence["perplexity"]["perplexity"]["nll_sum"].to_numpy(float)
    ci = bootstrap_ci((x,), np.mean, paired=False, n_resamples=prediction.profile.bootstrap_resamples)
    prediction.conclude(effect=float(x.mean()), ci=ci, n=len(x))

@pytest.mark.prediction(id="T-undeclared", claim="no nulls", needs=("perplexity",), criterion=Criterion("m", ">", 0.0))
def test_undeclared(prediction):
    prediction.not_run("never runs")
'''


def calibrate(tmp_path, *args):
    folder = tmp_path / "predictions"
    folder.mkdir(exist_ok=True)
    (folder / "test_toy.py").write_text(MODULE)
    return CliRunner().invoke(main, ["calibrate", "--predictions", str(folder), "--reps", "60", "--resamples", "200",
                                     *args])


def test_calibrate_judges_simulated_evidence_with_the_prediction_s_own_body(tmp_path):
    first = calibrate(tmp_path, "T-mean", "--json")
    assert first.exit_code == 0, first.output
    [entry] = json.loads(first.stdout)["predictions"]
    [null] = entry["nulls"]
    assert null["name"] == "centred normal" and null["reps"] == 60
    assert 0 <= null["false_supported"] <= 0.1 and null["mc_error"] >= 0
    assert sum(null["outcomes"].values()) == 60 and "refuted" in null["outcomes"]  # the null reaches both sides
    [power] = entry["power"]
    assert power["supported"] > 0.8  # a shift of one standard deviation at 12 draws
    assert calibrate(tmp_path, "T-mean", "--json").stdout == first.stdout  # seeded: reproducible


def test_a_prediction_without_nulls_is_listed_as_unmeasured_and_unknown_ids_are_one_line(tmp_path):
    result = calibrate(tmp_path)
    assert result.exit_code == 0 and "T-undeclared" in result.output and "unmeasured" in result.output
    bad = calibrate(tmp_path, "P-nope")
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "T-mean" in bad.output


def test_stored_rates_are_shown_beside_the_verdicts_of_that_version(tmp_path):
    from atlas.calibration import discover
    from atlas._report import render_report
    from atlas._store import VerdictRecord

    db = f"sqlite:///{tmp_path / 'c.db'}"
    assert calibrate(tmp_path, "T-mean", "--store", db).exit_code == 0
    [declared] = discover([tmp_path / "predictions"], ("T-mean",))
    store = Store(db)
    assert {(c.kind, c.name) for c in store.calibrations()[("T-mean", declared.version)]} == {
        ("null", "centred normal"), ("power", "at the smallest effect of interest")}
    store.write_verdict(VerdictRecord(prediction="T-mean", version=declared.version, form="general", claim="c",
                                      source="", model="m", outcome="supported", effect=1.0, ci_low=0.5, ci_high=1.5,
                                      n=12, criterion=declared.criterion.as_dict(), criterion_hash="h"))
    page = render_report(store, tmp_path / "r").read_text()
    assert "calibrated: false supported" in page and "centred normal, 60 draws" in page


def test_the_harness_reaches_every_outcome_from_constructed_evidence(tmp_path):
    from atlas.calibration import discover, judge_evidence

    calibrate(tmp_path, "T-mean")
    [declared] = discover([tmp_path / "predictions"], ("T-mean",))
    table = lambda x: {"perplexity": {"perplexity": pd.DataFrame({"nll_sum": np.asarray(x, float)})}}  # noqa: E731
    assert judge_evidence(declared, table([1.0, 1.1, 0.9, 1.2, 1.05])).outcome == "supported"
    assert judge_evidence(declared, table([-1.0, -1.1, -0.9, -1.2, -1.05])).outcome == "refuted"
    assert judge_evidence(declared, table([-1.0, 1.1, -0.9, 1.2, 0.05])).outcome == "inconclusive"


def test_check_fails_on_a_prediction_with_no_nulls(tmp_path):
    result = calibrate(tmp_path, "--check")
    assert result.exit_code == 1 and "T-undeclared: no nulls" in result.output
    assert calibrate(tmp_path, "T-mean", "--check").exit_code == 0


def test_calibration_and_a_pytest_run_give_a_prediction_one_version(prediction_project):
    """The report pairs rates with verdicts by version: the module's import name (pytest's, calibrate's) must not
    change it."""
    from atlas.calibration import discover

    pytester, db, args = prediction_project(MODULE, 2, "--atlas-model=tiny-gpt2")
    pytester.runpytest(*args, "-k", "test_mean")
    [stored] = [v for v in Store(db).latest_verdicts() if v.prediction == "T-mean"]
    [declared] = discover([pytester.path / "test_predictions.py"], ("T-mean",))
    assert stored.version == declared.version
