"""The step from a prediction body to a stored verdict: one verdict per prediction, stored only when the body has
ended, never "supported" on a body that failed, inverted or missing numbers never judged, and the exit status
following what was stored (issue 19, item 6)."""

import pytest

from atlas import Criterion, Outcome, Store

MODULE = '''
import pytest
from atlas import Criterion

CLAIM = Criterion("an effect", ">", 0.0)

def mark(name):
    return pytest.mark.prediction(id=name, claim=name, needs=("perplexity",), criterion=CLAIM)

@mark("T-twice")
def test_twice(prediction):
    try:
        prediction.conclude(effect=1.0, ci=(0.5, 1.5), n=3)
    finally:
        prediction.conclude(effect=-1.0, ci=(-1.5, -0.5), n=3)

@mark("T-crash-after")
def test_crash_after(prediction):
    prediction.conclude(effect=1.0, ci=(0.5, 1.5), n=3)
    raise RuntimeError("the report step broke")

@mark("T-inverted")
def test_inverted(prediction):
    prediction.conclude(effect=-5.0, ci=(0.3, 0.1), n=3)

@mark("T-none")
def test_none(prediction):
    prediction.conclude(effect=None, ci=(0.3, 0.4), n=3)

@mark("T-swallowed")
def test_swallowed(prediction):
    try:
        prediction.conclude(effect=-1.0, ci=(-1.5, -0.5), n=3)
    except AssertionError:
        pass
'''


def run(prediction_project, module=MODULE):
    pytester, db, args = prediction_project(module, 1, "--atlas-model=tiny-gpt2")
    return pytester.runpytest(*args), {v.prediction: v for v in Store(db).latest_verdicts()}


def test_a_verdict_is_stored_once_after_the_body_and_the_exit_status_follows_it(prediction_project):
    result, verdicts = run(prediction_project)
    outcomes = {k: v.outcome for k, v in verdicts.items()}
    # a second conclude is an error; the first verdict, concluded before a failure, is void
    assert outcomes["T-twice"] == "error" and "twice" in verdicts["T-twice"].reason
    assert outcomes["T-crash-after"] == "error" and "the report step broke" in verdicts["T-crash-after"].reason
    assert outcomes["T-inverted"] == "inconclusive" and "inverted" in verdicts["T-inverted"].reason
    assert outcomes["T-none"] == "inconclusive" and "effect" in verdicts["T-none"].reason
    assert outcomes["T-swallowed"] == "refuted"  # the body swallowed its refutation: the run still fails
    counts = result.parseoutcomes()
    assert counts.get("failed") == 2 and counts.get("refuted") == 1 and counts.get("inconclusive") == 2, counts
    assert result.ret == 1


def test_a_test_among_predictions_without_the_fixture_is_a_collection_error(prediction_project):
    stray = MODULE + '''
def test_stray():
    assert True
'''
    pytester, db, args = prediction_project(stray, 1, "--atlas-model=tiny-gpt2")
    (pytester.path / "predictions").mkdir()
    (pytester.path / "test_predictions.py").rename(pytester.path / "predictions" / "test_predictions.py")
    result = pytester.runpytest(*args, "predictions")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_stray*must take the `prediction` fixture*"])


def test_no_effect_of_interest_is_its_own_outcome():
    criterion = Criterion("a difference", ">", 0.0, sesoi=0.1)
    assert criterion.judge(0.01, -0.05, 0.08) is Outcome.NO_EFFECT
    assert criterion.judge(0.01, -0.05, 0.2) is Outcome.INCONCLUSIVE  # reaches past the smallest effect of interest
    assert criterion.judge(0.3, 0.2, 0.4) is Outcome.SUPPORTED
    assert Criterion("a difference", ">", 0.0).judge(0.01, -0.05, 0.08) is Outcome.INCONCLUSIVE  # none declared


def test_a_criterion_declares_a_unit_and_scope_it_can_be_held_to():
    from atlas import SettingsError

    with pytest.raises(SettingsError, match="unit"):
        Criterion("x", ">", 0.0, unit="tokens")
    with pytest.raises(SettingsError, match="scope"):
        Criterion("x", ">", 0.0, scope="everywhere")
    with pytest.raises(SettingsError, match="sesoi"):
        Criterion("x", ">", 0.0, sesoi=-1.0)
    general = Criterion("x", ">", 0.0, unit="layers", scope="across models")
    assert general.scope_of(("smollm2-135m-instruct",)).startswith("in smollm2-135m-instruct (the claim is across")
    assert general.scope_of(("a", "b")).startswith("in a vs b (")  # a pair compared is one draw too
    assert Criterion("x", ">", 0.0, unit="models", scope="across models").scope_of(("a", "b", "c")) == \
        "across models: a, b, c"
    assert Criterion("x", ">", 0.0).version != general.version  # the unit and scope are part of the version


def test_a_criterion_declares_the_scale_of_its_statistic():
    from atlas import SettingsError
    from atlas._verdict import SCALES

    with pytest.raises(SettingsError, match=r"scale must be one of \['correlation', 'ratio', 'log_ratio', 'share', "
                                            r"'difference'\], not 'percent'"):
        Criterion("x", ">", 0.0, scale="percent")
    assert Criterion("x", ">", 0.0).scale == "difference"  # the axis that takes any number
    assert {Criterion("x", ">", 0.0, scale=s).as_dict()["scale"] for s in SCALES} == set(SCALES)
    assert Criterion("x", ">", 0.0, scale="ratio").version != Criterion("x", ">", 0.0).version  # part of the version


def test_holm_adjustments_are_stored_and_read_alike_by_verdicts_and_diff(tmp_path):
    import json

    from click.testing import CliRunner

    from atlas._flips import compare
    from atlas._predict import store_adjustments
    from atlas._store import VerdictRecord
    from atlas.cli import main

    db = f"sqlite:///{tmp_path / 'h.db'}"
    store = Store(db)
    for name, outcome, p in (("P-strong", "supported", 0.001), ("P-weak", "supported", 0.02),
                             ("P-none", "inconclusive", 0.3)):
        store.write_verdict(VerdictRecord(prediction=name, version="v", form="general", claim="", source="",
                                          model="m", outcome=outcome, effect=1.0, ci_low=0.1, ci_high=2.0, n=9,
                                          criterion={}, criterion_hash="", session="s", evidence={"p_value": p}))
    assert store_adjustments(store, "s") == 3
    before = json.loads(CliRunner().invoke(main, ["verdicts", "--db", db, "--json"]).stdout)["verdicts"]
    adjusted = {v["prediction"]: v["adjusted_outcome"] for v in before}
    assert adjusted == {"P-strong": "supported", "P-weak": "inconclusive", "P-none": "inconclusive"}
    assert {v["holm_family"] for v in before} == {3}
    # a later night where the weak one survives its family flips it, as the report and `atlas verdicts` show
    after = [{**v, "adjusted_outcome": "supported"} if v["prediction"] == "P-weak" else v for v in before]
    [flip] = compare(before, after).flips
    assert (flip["prediction"], flip["from"], flip["to"]) == ("P-weak", "inconclusive", "supported")


def test_a_session_that_ends_stores_the_adjustment_of_its_general_forms(prediction_project):
    module = '''
import numpy as np
import pytest
from atlas import Criterion, bootstrap_ci

def mean_nll(prediction):
    nll = prediction.evidence["perplexity"]["perplexity"]["nll_sum"].to_numpy(float)
    ci = bootstrap_ci((nll,), np.mean, paired=False, n_resamples=200)
    prediction.conclude(effect=float(nll.mean()), ci=ci, n=len(nll))

@pytest.mark.prediction(id="T-above", claim="c", needs=("perplexity",), criterion=Criterion("mean NLL", ">", 0.0))
def test_above(prediction):
    mean_nll(prediction)

@pytest.mark.prediction(id="T-below", claim="c", needs=("perplexity",), criterion=Criterion("mean NLL", "<", 0.0))
def test_below(prediction):
    mean_nll(prediction)
'''
    pytester, db, args = prediction_project(module, 2, "--atlas-model=tiny-gpt2")
    pytester.runpytest(*args)
    store = Store(db)
    adjusted = store.adjustments()
    judged = {v.id: v for v in store.verdicts() if v.outcome in ("supported", "refuted", "inconclusive")}
    with_p = {i for i, v in judged.items() if v.evidence.get("p_value") is not None}
    assert len(with_p) == 2 and set(adjusted) == with_p and all(a.family == 2 for a in adjusted.values())
    assert sorted(a.outcome for a in adjusted.values()) == ["refuted", "supported"]
