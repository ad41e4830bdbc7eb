"""P12's calibration (issue 19): enough seeds, an interval that can fall on either side, and every outcome.

At the old quick profile's 4 seeds P12 was a sign test: its percentile interval over seeds was the range of the
six seed-pair ratios, "supported" came out 7-11% of the time with no curriculum effect, and "refuted" never.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from atlas import Outcome, validate_table
from atlas.calibration import discover, judge_evidence
from atlas._profiles import PROFILES
from atlas.simulate.memory import QUICK_SEEDS, endpoints, memory_tables

MODULE = Path(__file__).resolve().parents[1] / "predictions" / "test_p12_memory_viscosity.py"
PROFILE = dataclasses.replace(PROFILES["quick"], bootstrap_resamples=500)


@pytest.fixture(scope="module")
def p12():
    return discover([MODULE], ("P12",))[0]


def _judge(p12, evidence):
    return judge_evidence(p12, evidence, PROFILE)


def test_the_simulated_tables_are_the_instruments_and_hold_the_declared_ratio(p12):
    tables = endpoints("check", ratio=2.0)(np.random.default_rng(0))["memory"]
    for name, table in tables.items():
        validate_table(name, table)
    assert len(tables["memory"]) == 2 * QUICK_SEEDS
    # many seeds: the statistic P12 reads converges to the simulator's population ratio, here R = 2
    log_ratio = p12.function.__globals__["log_ratio"]
    many = endpoints("many", ratio=2.0, seeds=150)(np.random.default_rng(1))["memory"]["memory"]
    z = [np.log(many[many["curriculum"] == c][["lambda_max", "trace"]].to_numpy()) for c in many["curriculum"].unique()]
    assert float(log_ratio(*z, np.ones(150))) == pytest.approx(np.log(2), abs=0.15)


def test_false_supported_under_each_declared_null_is_at_most_5_percent_at_the_quick_profile(p12):
    # the old 4-seed percentile bootstrap: 13-18 of 200 supported under each of these nulls (6.5-9%)
    draws, supported = 30, {}
    for name, simulate in p12.nulls.items():
        outcomes = [_judge(p12, simulate(np.random.default_rng([19, i]))).outcome for i in range(draws)]
        supported[name] = outcomes.count(Outcome.SUPPORTED)
    assert len(supported) >= 3 and sum(supported.values()) <= 0.05 * draws * len(supported), supported


def test_supported_with_a_curriculum_shift_and_its_permutation_p_below_a_sign_tests_floor(p12):
    trial = _judge(p12, endpoints("large shift", ratio=6.0)(np.random.default_rng(0)))
    assert trial.outcome == Outcome.SUPPORTED, trial.reason
    assert trial.verdict["n"] == QUICK_SEEDS >= 8
    assert trial.verdict["evidence"]["permutation_p"] < 0.125  # 4 seeds: never below 2 / 2^4


def test_refuted_when_each_seeds_other_curriculum_lands_on_another_seeds_endpoint(p12):
    # seeds that are not exchangeable: A's endpoints around a circle, and each seed's B endpoint at the A endpoint
    # of the seed opposite it, so pairs of curricula (of distinct seeds) lie closer than pairs within one; with
    # exchangeable seeds the population ratio is >= 1 and only noise puts the interval below 0
    rng = np.random.default_rng(0)
    angle = 2 * np.pi * np.arange(QUICK_SEEDS) / QUICK_SEEDS
    noise = lambda: rng.normal(0.0, 0.01, (QUICK_SEEDS, 2))  # noqa: E731
    za = np.log([30.0, 400.0]) + 0.15 * np.column_stack([np.cos(angle), np.sin(angle)]) + noise()
    zb = za[(np.arange(QUICK_SEEDS) + QUICK_SEEDS // 2) % QUICK_SEEDS] + noise()
    trial = _judge(p12, memory_tables(za, zb, rng))
    assert trial.outcome == Outcome.REFUTED, trial.reason
    assert trial.verdict["ci"][1] <= 0


def test_no_effect_of_interest_with_no_curriculum_effect(p12):
    trial = _judge(p12, endpoints("null", ratio=1.0)(np.random.default_rng(0)))
    assert trial.outcome == Outcome.NO_EFFECT, trial.reason
    sesoi = p12.criterion.sesoi
    low, high = trial.verdict["ci"]
    assert -sesoi < low <= 0 < high < sesoi


def test_inconclusive_when_the_interval_straddles_zero_and_the_sesoi(p12):
    trial = _judge(p12, endpoints("at the sesoi, independent runs", ratio=2.0, share=0.0)(np.random.default_rng(3)))
    assert trial.outcome == Outcome.INCONCLUSIVE, trial.reason
    low, high = trial.verdict["ci"]
    assert low <= 0 and high >= p12.criterion.sesoi


def test_fewer_than_three_matched_seeds_are_inconclusive(p12):
    evidence = endpoints("two seeds", ratio=6.0, seeds=2)(np.random.default_rng(0))
    trial = _judge(p12, evidence)
    assert trial.outcome == Outcome.INCONCLUSIVE and "not finite" in trial.verdict["reason"]
