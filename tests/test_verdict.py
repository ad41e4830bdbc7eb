import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from atlas import Criterion, Outcome

finite = st.floats(-1e6, 1e6, allow_nan=False)


@pytest.mark.parametrize("direction, ci, outcome", [
    (">", (2.1, 3.0), Outcome.SUPPORTED), (">", (1.0, 1.9), Outcome.REFUTED), (">", (1.5, 2.5), Outcome.INCONCLUSIVE),
    ("<", (0.1, 1.9), Outcome.SUPPORTED), ("<", (2.0, 3.0), Outcome.REFUTED), ("<", (1.9, 2.1), Outcome.INCONCLUSIVE),
    (">=", (2.0, 3.0), Outcome.SUPPORTED), ("<=", (1.0, 2.0), Outcome.SUPPORTED),
])
def test_judge_reads_the_ci_against_the_threshold(direction, ci, outcome):
    assert Criterion("s", direction, 2.0).judge(sum(ci) / 2, *ci) is outcome


@given(finite, finite, finite)
def test_missing_data_is_never_supported(effect, a, b):
    criterion = Criterion("s", ">", 0.0)
    for args in [(math.nan, a, b), (effect, math.nan, b), (None, a, b)]:
        assert criterion.judge(*args) is Outcome.INCONCLUSIVE


@pytest.mark.parametrize("nan", [np.float32("nan"), np.float64("nan"), torch.tensor(float("nan")),
                                 torch.tensor(float("nan"), dtype=torch.bfloat16), float("inf"), np.float32("-inf"),
                                 torch.tensor(float("inf"))])
def test_non_finite_numbers_of_any_type_are_never_judged(nan):
    """Python's math.isnan check alone let numpy and torch NaN through as 'supported'."""
    criterion = Criterion("s", ">", 0.1)
    for args in [(nan, 0.2, 0.3), (0.25, nan, 0.3), (0.25, 0.2, nan)]:
        outcome, reason = criterion.judge_with_reason(*args)
        assert outcome is Outcome.INCONCLUSIVE and "not finite" in reason


@given(finite, finite, finite, st.sampled_from([">", ">=", "<", "<="]))
def test_the_decision_rule_reads_the_ci_against_the_threshold(threshold, a, b, direction):
    """Supported exactly when the whole CI lies on the claimed side; refuted exactly when it lies on the other;
    inconclusive otherwise (boundaries by the direction's strictness)."""
    lo, hi = sorted((a, b))
    outcome = Criterion("s", direction, threshold).judge((lo + hi) / 2, lo, hi)
    claimed = {">": lo > threshold, ">=": lo >= threshold, "<": hi < threshold, "<=": hi <= threshold}[direction]
    other = {">": hi <= threshold, ">=": hi < threshold, "<": lo >= threshold, "<=": lo > threshold}[direction]
    expected = Outcome.SUPPORTED if claimed else Outcome.REFUTED if other else Outcome.INCONCLUSIVE
    assert outcome is expected
    # the mirror criterion swaps supported and refuted
    mirror = {">": "<=", ">=": "<", "<": ">=", "<=": ">"}[direction]
    flipped = Criterion("s", mirror, threshold).judge((lo + hi) / 2, lo, hi)
    assert (outcome is Outcome.SUPPORTED) == (flipped is Outcome.REFUTED)
    assert (outcome is Outcome.REFUTED) == (flipped is Outcome.SUPPORTED)


def test_editing_a_criterion_makes_a_new_version():
    a, b = Criterion("s", ">", 2.0), Criterion("s", ">", 2.5)
    assert a.version != b.version and a.version == Criterion("s", ">", 2.0).version


def test_bad_direction():
    with pytest.raises(ValueError, match="direction"):
        Criterion("s", "=>", 1.0)
