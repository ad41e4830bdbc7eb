"""P9b and P10, claims about a recipe over its seeds, judged by their own bodies on simulated seed pairs.

The defects of issue 19 reproduced: two seed pairs that share seed 0 and whose barrier reductions have opposite
signs (+0.30, -0.20) were "supported" (parts of the held-out pairs resampled, the seeds treated as fixed); P10's
reference was a seed against its own checkpoint 50 steps earlier (CKA 0.998), so seeds nearly as alike (CKA 0.99)
were "different branches"; P9a held by construction. Now: seeds are the unit (disjoint pairs, a Student-t interval
over them), P10's reference is a known change of computation, P9a is an instrument test, and each prediction
reaches supported, refuted and inconclusive.
"""

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

from atlas import SECOND_OF_PAIR, Outcome
from atlas.calibration import calibrate, discover, judge_evidence
from atlas._profiles import PROFILES
from atlas.simulate.seeds import SeedPairs, barrier_tables, branch_tables, opposite_signs

PREDICTIONS = Path(__file__).resolve().parents[1] / "predictions"
P9, P10 = PREDICTIONS / "test_p9_symmetry_orbits.py", PREDICTIONS / "test_p10_algorithmic_branches.py"
PROFILE = dataclasses.replace(PROFILES["quick"], bootstrap_resamples=500)
CASES = {"P9b": (P9, "symmetry_orbits", barrier_tables), "P10": (P10, "algorithmic_branches", branch_tables)}


def declared(prediction: str):
    return discover([CASES[prediction][0]], (prediction,))[0]


def read_runs(prediction) -> tuple[str, ...]:
    """The models whose runs the body reads: each pair's first seed, or every model (each against one other)."""
    settings = next(iter(prediction.marker["needs"].values()))
    return prediction.model_names[::2] if settings.get("other") == SECOND_OF_PAIR else prediction.model_names


def judged(prediction: str, effects, **settings) -> Outcome:
    """The outcome of ``prediction``'s body on runs whose pair effects are ``effects``, cycled over its runs."""
    found = declared(prediction)
    _, instrument, tables = CASES[prediction]
    rng = np.random.default_rng(0)
    evidence = {(instrument, name): tables(effect, rng, **settings)
                for name, effect in zip(read_runs(found), itertools.cycle(effects))}
    return judge_evidence(found, evidence, PROFILE).outcome


def test_p9a_is_an_instrument_test_not_a_prediction():
    """It held by construction (an exact symmetry, and a distance ratio ~ 1 by geometry): a positive control, now
    tests/test_symmetry_orbits.py::test_a_random_permutation_is_the_same_function_as_far_away_as_another_seed."""
    assert [d.id for d in discover([P9])] == ["P9b-matching-lowers-barrier"]


@pytest.mark.parametrize("prediction", ["P9b", "P10"])
def test_seeds_are_the_unit_over_disjoint_pairs(prediction):
    found = declared(prediction)
    assert (found.criterion.unit, found.criterion.scope) == ("seeds", "across seeds")
    assert found.criterion.sesoi is not None and found.alternative is not None and len(found.nulls) >= 2
    runs = read_runs(found)
    assert len(runs) >= 5 and len(set(found.model_names)) == len(found.model_names)  # no seed in two pairs


@pytest.mark.parametrize("prediction, effects", [("P9b", (0.30, -0.20)), ("P10", (-0.30, 0.20))])
def test_seed_pairs_of_opposite_sign_are_not_supported(prediction, effects):
    """Two pairs sharing seed 0 with opposite effects were "supported" by resampling parts of the held-out pairs."""
    assert judged(prediction, effects) is Outcome.INCONCLUSIVE


def test_p10_seeds_nearly_as_alike_as_a_near_copy_are_one_branch():
    """Between-seed CKA 0.95 with adjacent checkpoints at 0.998 was "different branches"; against each seed's own
    change of computation (its held-out loss peak, CKA 0.5) the seeds are far more alike: refuted."""
    assert judged("P10", (0.45,), peak=0.5) is Outcome.REFUTED


@pytest.mark.parametrize("prediction, supported, refuted", [("P9b", 0.5, -0.3), ("P10", -0.3, 0.3)])
def test_each_outcome_is_reachable(prediction, supported, refuted):
    assert judged(prediction, (supported, supported * 1.2)) is Outcome.SUPPORTED
    assert judged(prediction, (refuted, refuted * 1.2)) is Outcome.REFUTED
    assert judged(prediction, (supported, refuted)) is Outcome.INCONCLUSIVE


def test_no_effect_of_interest_when_every_pair_is_near_the_threshold():
    assert judged("P10", (0.001, -0.001)) is Outcome.NO_EFFECT


def test_simulated_pairs_carry_their_effects_in_the_tables_the_bodies_read():
    rng = np.random.default_rng(3)
    drawn = SeedPairs("symmetry_orbits", ("a", "b", "c"), opposite_signs(0.2, 0.3), "null")(rng)
    for tables in drawn.values():
        whole = tables["symmetry_matching"].query("definition == 'max_minus_mean_endpoints'").set_index("alignment")
        assert 0.2 <= abs(whole.loc["before", "barrier"] - whole.loc["after", "barrier"]) <= 0.3
        assert (tables["symmetry_matching_chunks"]["barrier"] >= 0).all()
    branches = branch_tables(-0.1, rng)["algorithmic_branches"].set_index("comparison")["cka"]
    assert branches["between_seeds"] - branches[["peak_model", "peak_other"]].mean() == pytest.approx(-0.1)


def test_calibration_a_small_run():
    """The full run (``atlas calibrate P9b P10 --reps 1000``): false supported 2.4% / 2.9% (P9b), 2.1% / 3.6%
    (P10); power at the SESOI 0.89 (P9b), 0.92 (P10)."""
    results = calibrate(discover([P9, P10]), reps=40, resamples=200)
    for entry in results:
        assert all(null["false_supported"] <= 0.1 for null in entry["nulls"]), entry
        assert entry["power"][0]["supported"] >= 0.7, entry
