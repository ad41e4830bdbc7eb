"""The inference under the verdicts: the resampling unit, small-sample intervals, and what a p-value reads.

Simulations here are small and seeded: each checks a property that the method it replaced got wrong.
"""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from atlas import bootstrap_ci
from atlas._evidence import (_spearman_rows, ablation_profile, effective_layers, fixed_profile, layer_contrast,
                             layer_correlation, mean_profile)
from atlas._stats import Interval, one_sided_p

L, PASSAGES, REPS, B = 30, 24, 150, 400


def null_passages(rng, phi: float | None) -> pd.DataFrame:
    """Per-passage layer profiles with no trend in expectation; the noise is AR(1) over layers (phi), or a random
    walk (phi None): what smooth, shared passage effects look like in a real model's layers."""
    noise = rng.normal(size=(PASSAGES, L))
    walk = np.empty_like(noise)
    walk[:, 0] = noise[:, 0]
    for layer in range(1, L):
        walk[:, layer] = (walk[:, layer - 1] if phi is None else phi * walk[:, layer - 1]) + noise[:, layer]
    return pd.DataFrame({"passage_id": np.repeat(np.arange(PASSAGES), L).astype(str), "layer": np.tile(np.arange(L), PASSAGES),
                         "coupling": walk.ravel()})


def layer_pair_bootstrap(x, y, rng) -> tuple[float, float]:
    """The old method: (layer, value) pairs resampled as if layers were independent; percentile interval."""
    idx = rng.integers(0, len(x), size=(B, len(x)))
    rho = _spearman_rows(x[idx], y[idx])
    return tuple(np.nanquantile(rho, [0.025, 0.975]))


@pytest.mark.parametrize("phi", [0.8, None])
def test_the_interval_over_layers_keeps_false_support_nominal_where_resampling_layers_does_not(phi):
    """Passages with independent smooth noise and no shared profile (the shared profiles of issue 19 are in
    tests/test_calibration_layers.py): the layer-pair bootstrap calls that noise a trend."""
    rng = np.random.default_rng(0)
    old, new = [], []
    for rep in range(REPS):
        table = null_passages(rng, phi)
        profile = mean_profile(table, "coupling")
        layers = fixed_profile(profile.layers)
        old.append(layer_pair_bootstrap(layers.profile, profile.profile, rng)[0] > 0)
        result = layer_correlation(layers, profile, n_resamples=B, seed=rep)
        new.append(result.ci[0] > 0)
        assert 2 <= result.n_eff <= L and result.ci.unit == "layers"
    assert np.mean(new) <= 0.05  # nominal: 2.5% (one side of a 95% interval)
    assert np.mean(old) >= 0.10  # the layer bootstrap calls noise "supported" far more often


def test_a_relation_over_rough_profiles_is_found_and_a_smooth_trend_is_worth_few_layers():
    rng = np.random.default_rng(1)
    table = null_passages(rng, 0.0)  # white over layers
    rough = np.random.default_rng(2).normal(size=L)
    table["coupling"] += 2 * rough[table["layer"]]  # a profile every passage shares, no smoother than noise
    result = layer_correlation(fixed_profile(np.arange(L), rough), mean_profile(table, "coupling"), n_resamples=B)
    assert result.rho > 0.9 and result.n_eff > 20 and result.ci[0] > 0.5 and result.n_units == {"y": PASSAGES}
    table = null_passages(rng, 0.8)
    table["coupling"] += 0.3 * table["layer"]  # a clean trend: as smooth as a random walk, one draw of it
    trend = layer_correlation(fixed_profile(np.arange(L)), mean_profile(table, "coupling"), n_resamples=B)
    assert trend.rho > 0.95 and trend.within[0] > 0.9 and trend.n_eff < 5


def test_bca_covers_better_than_the_percentile_interval_at_twelve_passages():
    """A skewed per-passage quantity (log-normal), n = 12, the mean: the percentile interval under-covers."""
    rng = np.random.default_rng(2)
    truth = np.exp(0.5)  # the mean of a log-normal(0, 1)
    covered = {"percentile": 0, "BCa": 0}
    for _ in range(300):
        sample = rng.lognormal(0.0, 1.0, size=12)
        for method in covered:
            res = stats.bootstrap((sample,), np.mean, n_resamples=999, method=method, rng=rng)
            covered[method] += res.confidence_interval.low <= truth <= res.confidence_interval.high
    coverage = {k: v / 300 for k, v in covered.items()}
    assert coverage["BCa"] > coverage["percentile"] and coverage["percentile"] < 0.93, coverage


def test_bootstrap_ci_is_bca_and_carries_its_replicates():
    data = np.random.default_rng(3).lognormal(size=15)
    ci = bootstrap_ci((data,), np.mean, paired=False, n_resamples=500)
    reference = stats.bootstrap((data,), np.mean, n_resamples=500, method="BCa", vectorized=False,
                                rng=np.random.default_rng(0)).confidence_interval
    assert isinstance(ci, Interval) and ci == pytest.approx((reference.low, reference.high))
    assert len(ci.replicates) == 500
    lo, hi = ci  # still a plain pair
    assert lo < data.mean() < hi


def test_one_sided_p_agrees_with_the_interval_it_comes_from():
    """Holm's p-values must judge as the CI does: p < 0.025 exactly when the 95% interval excludes the threshold,
    for a BCa interval as for a percentile one (the share of replicates disagreed with BCa in 37% of cases)."""
    rng = np.random.default_rng(3)
    for trial in range(12):
        data = rng.lognormal(0.0, 1.0, size=15) - 1.2 + 0.1 * trial  # skewed: BCa moves far from the percentiles
        threshold = 0.0
        for method in ("BCa", "percentile"):
            ci = bootstrap_ci((data,), np.mean, paired=False, n_resamples=999, method=method)
            p = one_sided_p(ci, threshold, ">")
            assert (p < 0.025) == (ci[0] > threshold), (trial, method, ci, p)
            assert (one_sided_p(ci, threshold, "<") < 0.025) == (ci[1] < threshold)
    percentile = Interval(0.0, 1.0, np.arange(-20.0, 80.0) + 0.5)
    assert one_sided_p(percentile, 0.0, ">") == pytest.approx(0.2, abs=0.01)  # a fifth of replicates below 0
    assert one_sided_p(Interval(0.0, 1.0), 0.0, ">") is None  # no replicates, no level function


def test_layer_contrast_resamples_the_passages_that_make_the_layers():
    rng = np.random.default_rng(4)
    table = null_passages(rng, 0.8)
    sample = mean_profile(table, "coupling")
    effect, ci = layer_contrast(sample, {4: 1.0, 3: -0.5, 5: -0.5}, n_resamples=B)
    profile = sample.profile
    assert effect == pytest.approx(profile[4] - (profile[3] + profile[5]) / 2)
    assert ci[0] < effect < ci[1]


def test_ablation_profile_pools_passages_as_the_instrument_does():
    passages = pd.DataFrame({"passage_id": ["a"] * 4 + ["b"] * 4, "domain": "d", "layer": [0, 0, 1, 1] * 2,
                             "head": [0, 1] * 4, "nll_sum": [12.0, 11.0, 10.5, 10.0, 22.0, 21.0, 20.0, 20.5],
                             "baseline_nll_sum": [10.0] * 4 + [20.0] * 4, "n_tokens": [5] * 4 + [10] * 4})
    profile = ablation_profile(passages).profile
    base = np.exp(30 / 15)
    expected = [np.mean([np.exp(34 / 15), np.exp(32 / 15)]) - base, np.mean([np.exp(30.5 / 15), np.exp(30.5 / 15)]) - base]
    np.testing.assert_allclose(profile, expected)


def test_effective_layers_shrink_with_smoothness():
    rng = np.random.default_rng(5)
    white = rng.normal(size=200)
    smooth = np.cumsum(rng.normal(size=200))
    assert effective_layers(white, rng.normal(size=200)) > 150
    assert effective_layers(smooth, np.cumsum(rng.normal(size=200))) < 20


def test_holm_adjusts_step_down_and_the_report_marks_what_survives():
    from atlas._verdict import holm_outcomes
    from atlas._stats import holm
    from atlas._store import VerdictRecord

    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.001, 0.2]) == pytest.approx([0.002, 0.2])

    def verdict(i, outcome, p):
        return VerdictRecord(id=i, prediction=f"P{i}", version="v", form="general", claim="", source="", model="m",
                             outcome=outcome, criterion={}, criterion_hash="", session="s", evidence={"p_value": p})

    adjusted = holm_outcomes([verdict(1, "supported", 0.001), verdict(2, "supported", 0.02),
                              verdict(3, "inconclusive", 0.3), verdict(4, "refuted", 0.999)])
    assert adjusted[1]["outcome"] == "supported"  # 3 x 0.001 <= 0.025 (first of the step-down)
    assert adjusted[2]["outcome"] == "inconclusive"  # 3 x 0.02 = 0.06: does not survive
    assert adjusted[4]["outcome"] == "refuted" and adjusted[4]["family"] == 4
