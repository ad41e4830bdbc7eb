"""P8 (grokking is a phase transition) on simulated seeds (atlas.simulate.trajectories), judged by its own body.

The issue's defects, each reproduced: quantised, saturating accuracy made the median |ΔΦ| 0, so a ramp with no
jump, a one-checkpoint glitch of +0.01 and one held-out pair flipping all reached the capped jump ratio, and
three seeds with a glitch each were "supported"; the training loss scaled by its whole range (dominated by the
early drop) let a 70% fall inside the jump window, or a loss spike's recovery, count as smooth. Each is refuted
now, and the criterion reaches supported, refuted and inconclusive."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from atlas import PROFILES, Outcome
from atlas.calibration import calibrate, discover, judge_evidence
from atlas._stats import one_sided_p
from atlas.simulate.trajectories import Seeds, flip, glitch, grokking, ramp, run_tables, spike

DECLARED = discover([Path(__file__).parents[1] / "predictions" / "test_p8_phase_transition.py"], ("P8",))[0]
PROFILE = replace(PROFILES["quick"], bootstrap_resamples=200)
SEEDS = DECLARED.model_names
EXACT = {"drift": 0.0, "early": 0.0}  # accuracy flat apart from what the shape does, as the issue constructed it


def judged(evidence) -> Outcome:
    return judge_evidence(DECLARED, evidence, PROFILE).outcome


def summary(shape, seed=0, **kw):
    tables = run_tables(np.random.default_rng(seed), shape, **(EXACT | kw))
    return tables["phase_transitions_summary"].set_index("order_parameter").loc["heldout_acc"]


@pytest.mark.parametrize("shape", [ramp, glitch, flip, spike, grokking(0.1, loss_fall=0.7)],
                         ids=["linear ramp", "glitch +0.01", "one pair flips", "loss spike recovery", "loss falls 70%"])
def test_each_null_the_old_criterion_supported_is_refuted(shape):
    assert judged(Seeds(shape, SEEDS, **EXACT)(np.random.default_rng(1))) is Outcome.REFUTED


def test_one_pair_flipping_is_floored_at_the_accuracy_resolution_not_capped():
    row = summary(flip)
    assert row["median_rise"] == 0 and row["rise"] == pytest.approx(row["resolution"])
    assert row["jump_ratio"] == pytest.approx(1.0) and not row["capped"]


def test_a_glitch_is_a_small_rise_that_does_not_persist():
    row = summary(glitch)
    assert row["rise"] == pytest.approx(0.01, abs=1e-4) and row["persistence"] == pytest.approx(0.0, abs=1e-9)


def test_a_ramp_rises_less_than_the_minimum_in_any_window():
    assert summary(ramp)["rise"] < 0.05


def test_the_loss_is_judged_against_its_own_level_in_the_window():
    falls = summary(grokking(0.1, loss_fall=0.7))
    assert falls["loss_change"] < 0.01  # the old scale: a share of the whole run's range, the early drop's
    assert falls["local_loss_change"] == pytest.approx(0.7, abs=0.03)
    recovers = summary(spike)  # the largest rise is the recovery from a spike of 3-6 times the loss
    assert recovers["loss_change"] < 0.01 and recovers["local_loss_change"] > 0.6


def test_a_grokking_jump_twice_the_minimum_in_every_seed_is_supported():
    assert judged(Seeds(grokking(0.2), SEEDS)(np.random.default_rng(2))) is Outcome.SUPPORTED


def test_seeds_that_disagree_are_inconclusive():
    rng = np.random.default_rng(3)
    evidence = Seeds(grokking(0.2), SEEDS[:2])(rng) | Seeds(glitch, SEEDS[2:])(rng)
    assert judged(evidence) is Outcome.INCONCLUSIVE


def test_the_claim_is_about_the_recipe_over_its_seeds():
    assert (DECLARED.criterion.unit, DECLARED.criterion.scope) == ("seeds", "across seeds")
    trial = judge_evidence(DECLARED, Seeds(grokking(0.2), SEEDS)(np.random.default_rng(4)), PROFILE)
    assert trial.verdict["n"] == 3 and trial.verdict["evidence"]["scope"].startswith("across seeds")
    t_interval = DECLARED.function.__globals__["t_interval"]
    margins = [seed["margin"] for seed in trial.verdict["evidence"]["seeds"].values()]
    assert tuple(t_interval(margins, unit="seeds")) == trial.verdict["ci"]
    for values in (margins, [0.5, 0.1, -0.1]):  # the p-value agrees with the Student-t interval
        ci = t_interval(values, unit="seeds")
        assert (one_sided_p(ci, 0.0, ">") < 0.025) == (ci[0] > 0)


def test_calibration_nulls_rarely_supported_and_the_alternative_often():
    (entry,) = calibrate([DECLARED], reps=10, resamples=200)
    assert {n["name"] for n in entry["nulls"]} == {"linear ramp", "glitch +0.01", "one held-out pair flips",
                                                   "loss spike recovery", "grokking while the loss falls 70%"}
    assert all(n["false_supported"] == 0 for n in entry["nulls"])
    assert entry["power"][0]["supported"] >= 0.5
