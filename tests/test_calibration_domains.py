"""Territory claims (P3d, P11, P13, P14) resample domains: calibration on simulated evidence.

A territory claim generalises over domains, three a side. P13 used to resample passages within six fixed
domains: with a modest spread between domains and no territory effect it came out "supported" about a quarter of
the time (7 of 30 seeded draws here). Each owned prediction is shown to reach supported, refuted and
inconclusive through its own body (``judge_evidence``), and the two-stage interval's coverage is measured.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from atlas import Outcome
from atlas.calibration import discover, judge_evidence
from atlas._profiles import PROFILES
from atlas._stats import bootstrap_ci, hierarchical_ci, mean_difference
from atlas.simulate import domains

PREDICTIONS = Path(__file__).resolve().parents[1] / "predictions"
PROFILE = dataclasses.replace(PROFILES["quick"], bootstrap_resamples=300)
ARCHAEOLOGICAL = ("poetry", "academic_abstract", "spanish")
LAMINAR = ("technical_documentation", "vernacular_dialect", "tech_forum_discussion")
LAB_PAIR = ("smollm2-135m-instruct", "lab:finetune-smollm2")  # no Lab run is trained: the evidence is simulated


def declared(module: str, pid: str):
    return discover([PREDICTIONS / module], (pid,))[0]


def outcomes(prediction, simulate, draws: int) -> list[Outcome]:
    return [judge_evidence(prediction, simulate(np.random.default_rng(i)), PROFILE).outcome for i in range(draws)]


def test_p13_is_not_supported_by_a_spread_between_domains():
    """Domains apart (SD 0.05 of cosine), territories not: the passage bootstrap within fixed domains said
    "supported" 7 times in these 30 draws; resampling domains, at most the nominal share."""
    p13 = declared("test_p13_archaeological_rougher.py", "P13")
    null = domains.smoothness("modest domain spread", domain_sd=0.05, passage_sd=0.05)
    assert outcomes(p13, null, 30).count(Outcome.SUPPORTED) <= 1


CASES = {  # (module, id): simulators that must come out supported, refuted, inconclusive
    ("test_p13_archaeological_rougher.py", "P13"): (
        domains.smoothness("rougher", shift=-0.4, shifted=ARCHAEOLOGICAL, passage_sd=0.02),
        domains.smoothness("smoother", shift=0.4, shifted=ARCHAEOLOGICAL, passage_sd=0.02),
        domains.smoothness("null")),
    ("test_p14_competing_domains.py", "P14"): (
        domains.tightness("conflict", shift=-1.2, toward=LAMINAR, against=ARCHAEOLOGICAL, domain_sd=0.02),
        # archaeological gradients share more of the common direction: they agree with laminar ones more than
        # laminar ones agree among themselves
        domains.tightness("aligned", alignment=0.05, lift=0.6, lifted=ARCHAEOLOGICAL, domain_sd=0.01, dim=4096),
        domains.tightness("null")),
    ("test_p11_basin_connectivity.py", "P11"): (
        domains.interpolation("higher", shift=0.05, shifted=ARCHAEOLOGICAL),
        domains.interpolation("lower", shift=-0.05, shifted=ARCHAEOLOGICAL),
        domains.interpolation("null")),
    ("test_p3_rlhf_variance.py", "P3d"): (
        domains.perplexity_pair("larger drop", LAB_PAIR, shift=0.3, shifted=ARCHAEOLOGICAL),
        domains.perplexity_pair("smaller drop", LAB_PAIR, shift=-0.3, shifted=ARCHAEOLOGICAL),
        domains.perplexity_pair("null", LAB_PAIR)),
}


@pytest.mark.parametrize("module, pid", list(CASES))
def test_each_territory_prediction_reaches_every_outcome(module, pid):
    prediction = declared(module, pid)
    assert prediction.criterion.unit == "domains"
    supported, refuted, inconclusive = CASES[module, pid]
    assert outcomes(prediction, supported, 3) == [Outcome.SUPPORTED] * 3
    assert outcomes(prediction, refuted, 3) == [Outcome.REFUTED] * 3
    assert judge_evidence(prediction, inconclusive(np.random.default_rng(0)), PROFILE).outcome is Outcome.INCONCLUSIVE
    assert set(prediction.nulls) and prediction.alternative is not None


def test_the_two_stage_interval_covers_and_the_passage_bootstrap_does_not():
    """Three domains a side with a spread between domains (SD 0.1) and passage noise (SD 0.1, 8 passages): the
    two-stage interval covers the true contrast (0) at least at its level; the passage bootstrap within fixed
    domains far less often."""
    covered, fixed = [], []
    for seed in range(150):
        rng = np.random.default_rng(seed)
        data = {d: rng.normal(0.1 * rng.normal(), 0.1, 8) for d in ARCHAEOLOGICAL + LAMINAR}
        ci = hierarchical_ci((ARCHAEOLOGICAL, LAMINAR), mean_difference, value=lambda d, c: c @ data[d] / c.sum(-1),
                             passages={d: 8 for d in data}, n_resamples=300, seed=seed)
        covered.append(ci[0] <= 0 <= ci[1])
        within = bootstrap_ci([data[d] for d in ARCHAEOLOGICAL + LAMINAR],
                              lambda *x, axis=-1: np.mean(x[:3], 0).mean(axis) - np.mean(x[3:], 0).mean(axis),
                              paired=False, n_resamples=300, vectorized=True, method="percentile")
        fixed.append(within[0] <= 0 <= within[1])
    assert ci.unit == "domains" and ci.at_level(0.5)[1] < ci[1]
    assert np.mean(covered) >= 0.95 and np.mean(fixed) < 0.8


def test_a_stratum_of_one_domain_has_no_interval():
    ci = hierarchical_ci((("a",), ("b", "c")), mean_difference, n_resamples=10)
    assert np.isnan(ci).all() and ci.unit == "domains"
