"""The algorithmic_branches instrument on tiny Lab runs: matched loss is found as documented, a run compared with
itself is one branch (CKA 1), two seeds are compared at their matched checkpoints, each seed also against its
held-out loss peak, and bad input is refused.
(CKA itself, against a hand-computed case and under orthogonal transforms: tests/test_cka.py.)"""

import pandas as pd
import pytest

from atlas import load_model, validate_table
from atlas._errors import BadInput, SettingsError
from atlas.instruments import matched_checkpoints, measure_algorithmic_branches
from atlas.instruments._labruns import lab_run
from atlas.lab import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    return [load_model(str(train("tiny-modular", seed=s, out=out, progress=False).checkpoints[-1][1]), device="cpu")
            for s in (0, 1)]


def test_matched_loss_is_the_lowest_both_reach_closest_in_log():
    a = pd.Series([5.0, 1.0, 0.1, 0.2], index=[0, 10, 20, 30])
    b = pd.Series([5.0, 0.5, 0.4, 0.12], index=[0, 10, 20, 30])
    assert matched_checkpoints(a, b) == (20, 30, 0.12)  # L* = max(0.1, 0.12); A's 0.1 is closest to it in log
    assert matched_checkpoints(a, b, target=0.45) == (10, 10, 0.45)  # log-closest: 1 over 0.1, 0.5 over 0.4


def test_a_run_against_itself_is_one_branch(runs, starter):
    a, _ = runs
    tables = measure_algorithmic_branches(a, starter, other=a, probes=24, chunks=3, permutations=19, progress=False)
    for name, table in tables.items():
        validate_table(name, table)
    rows = tables["algorithmic_branches"].set_index("comparison")
    assert rows.loc["between_seeds", "cka"] == pytest.approx(1.0, abs=1e-9)
    assert rows.loc["between_seeds", "step_a"] == rows.loc["between_seeds", "step_b"]
    assert rows.loc["within_model", "step_b"] < rows.loc["within_model", "step_a"]  # the checkpoint before
    assert rows.loc["between_seeds", "p_value"] == pytest.approx(1 / 20)  # nothing of 19 permutations beats it
    chunks = tables["algorithmic_branches_chunks"]
    assert len(chunks) == 5 * 3 and chunks.groupby("comparison")["n"].sum().eq(24).all()


def test_two_seeds_are_compared_at_their_matched_checkpoints(runs, starter):
    a, b = runs
    rows = measure_algorithmic_branches(a, starter, other=b, probes=24, chunks=3, permutations=19,
                                        progress=False)["algorithmic_branches"].set_index("comparison")
    between = rows.loc["between_seeds"]
    assert between["cka"] < 0.999 and min(between["loss_a"], between["loss_b"]) <= between["target_loss"] + 1e-12
    assert rows.loc["within_other", "step_a"] == between["step_b"]
    peak = rows.loc["peak_model"]  # the highest held-out loss among the checkpoints before the matched one
    trajectory = lab_run(a, "test").trajectory().set_index("step")
    earlier = trajectory.loc[trajectory.index < between["step_a"], "heldout_loss"]
    assert peak["step_a"] == between["step_a"] and peak["step_b"] == earlier.idxmax()
    assert peak["loss_b"] == pytest.approx(earlier.max())


def test_bad_input_is_refused(runs, tiny_gpt2, starter):
    a, _ = runs
    with pytest.raises(SettingsError, match="pass other="):
        measure_algorithmic_branches(a, starter, progress=False)
    with pytest.raises(SettingsError, match="probes >= 4 \\* chunks"):
        measure_algorithmic_branches(a, starter, other=a, probes=8, chunks=4, progress=False)
    with pytest.raises(BadInput, match="tiny-gpt2 is not a checkpoint of an Atlas Lab run"):
        measure_algorithmic_branches(a, starter, other=tiny_gpt2, progress=False)
