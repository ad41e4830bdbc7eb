import math

import pytest
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


@given(finite, finite, finite)
def test_supported_and_refuted_are_exclusive_and_mirror(threshold, a, b):
    lo, hi = sorted((a, b))
    up, down = Criterion("s", ">", threshold).judge(lo, lo, hi), Criterion("s", "<=", threshold).judge(lo, lo, hi)
    assert {up, down} <= {Outcome.SUPPORTED, Outcome.REFUTED, Outcome.INCONCLUSIVE}
    assert (up is Outcome.SUPPORTED) == (down is Outcome.REFUTED)


def test_editing_a_criterion_makes_a_new_version():
    a, b = Criterion("s", ">", 2.0), Criterion("s", ">", 2.5)
    assert a.version != b.version and a.version == Criterion("s", ">", 2.0).version


def test_bad_direction():
    with pytest.raises(ValueError, match="direction"):
        Criterion("s", "=>", 1.0)
