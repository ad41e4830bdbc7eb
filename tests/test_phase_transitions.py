"""The phase_transitions instrument on a tiny Lab run: its rows are the run's checkpoints, its order parameters
are recomputed from the weights, its summary finds a constructed jump, and a model that is no Lab run is refused."""

import numpy as np
import pandas as pd
import pytest

from atlas import load_model, validate_table
from atlas._errors import BadInput
from atlas.instruments import measure_phase_transitions, order_transitions
from atlas.instruments._order import fourier_sparsity, modular_embedding
from atlas.lab import lab_checkpoint, train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train("tiny-modular", seed=0, out=tmp_path_factory.mktemp("lab"), progress=False)


@pytest.fixture(scope="module")
def table(run):
    lm = load_model(str(run.checkpoints[-1][1]), device="cpu")
    return measure_phase_transitions(lm, None, fourier_k=2, progress=False)["phase_transitions"]


def test_one_row_per_checkpoint_from_the_trajectory(run, table):
    validate_table("phase_transitions", table)
    assert table["step"].tolist() == [step for step, _ in run.checkpoints]
    trajectory = run.trajectory.set_index("step").loc[table["step"]]
    for column in ("train_loss", "heldout_loss", "train_acc", "heldout_acc", "weight_norm"):
        np.testing.assert_array_equal(table[column].to_numpy(), trajectory[column].to_numpy())
    np.testing.assert_allclose(table["generalisation_gap"], trajectory["heldout_loss"] - trajectory["train_loss"])


def test_fourier_sparsity_is_that_of_each_checkpoints_embedding(run, table):
    p = lab_checkpoint(run.checkpoints[0][1]).recipe.data.p
    for (step, path), value in zip(run.checkpoints, table["fourier_sparsity"]):
        model = load_model(str(path), device="cpu").model
        assert value == pytest.approx(fourier_sparsity(modular_embedding(model, p), 2), abs=1e-12), step
    assert table["fourier_sparsity"].nunique() > 1  # the embedding changed during training


def test_the_summary_finds_a_jump_while_the_loss_is_flat_and_caps_an_infinite_ratio():
    steps = np.arange(0, 1001, 50)
    phi = np.where(steps >= 600, 1.0, 0.3)  # flat apart from one jump: an infinite ratio
    loss = np.full(len(steps), 0.01)
    loss[0] = 5.0
    table = pd.DataFrame({"step": steps, "train_loss": loss, "heldout_loss": 1 - phi, "train_acc": 1.0,
                          "heldout_acc": phi, "generalisation_gap": 1 - phi - loss, "weight_norm": 30.0 - phi,
                          "fourier_sparsity": np.nan})
    summary = order_transitions(table)
    validate_table("phase_transitions_summary", summary)
    acc = summary.set_index("order_parameter").loc["heldout_acc"]
    assert acc["step"] == 575 and acc["capped"] and acc["jump_ratio"] == 1e6 and acc["loss_change"] == 0
    assert set(summary["order_parameter"]) == {"heldout_acc", "generalisation_gap", "weight_norm"}  # no Fourier


def test_a_model_that_is_no_lab_run_is_refused_naming_the_fix(tiny_gpt2):
    with pytest.raises(BadInput, match="not a checkpoint of an Atlas Lab run.*lab:modular-addition@0"):
        measure_phase_transitions(tiny_gpt2, None, progress=False)


def test_a_language_model_run_has_no_fourier_sparsity(tmp_path):
    run = train("tiny-corpus", seed=0, out=tmp_path, progress=False)
    table = measure_phase_transitions(load_model(str(run.checkpoints[-1][1]), device="cpu"), None,
                                      progress=False)["phase_transitions"]
    validate_table("phase_transitions", table)
    assert table["fourier_sparsity"].isna().all() and len(table) == len(run.checkpoints)
    assert "fourier_sparsity" not in set(order_transitions(table)["order_parameter"])
