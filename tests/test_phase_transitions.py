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
    n_heldout = lab_checkpoint(run.checkpoints[0][1]).split["n_heldout"]  # the accuracy moves in steps of 1 / n
    assert (table["heldout_acc_resolution"] == 1 / n_heldout).all()
    assert np.allclose(table["heldout_acc"] * n_heldout, np.round(table["heldout_acc"] * n_heldout))
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


def _constructed(phi, loss, resolution=np.nan):
    steps = np.arange(0, 1001, 50)
    return pd.DataFrame({"step": steps, "train_loss": loss, "heldout_loss": 1 - phi, "train_acc": 1.0,
                         "heldout_acc": phi, "generalisation_gap": 1 - phi - loss, "weight_norm": 30.0 - phi,
                         "fourier_sparsity": np.nan, "heldout_acc_resolution": resolution})


def test_the_summary_finds_a_jump_while_the_loss_is_flat_and_caps_an_infinite_ratio():
    steps = np.arange(0, 1001, 50)
    phi = np.where(steps >= 600, 1.0, 0.3)  # flat apart from one jump: an infinite ratio without a resolution
    loss = np.full(len(steps), 0.01)
    loss[0] = 5.0
    table = _constructed(phi, loss)
    validate_table("phase_transitions", table)
    summary = order_transitions(table)
    validate_table("phase_transitions_summary", summary)
    acc = summary.set_index("order_parameter").loc["heldout_acc"]
    assert acc["step"] == 575 and acc["capped"] and acc["jump_ratio"] == 1e6 and acc["loss_change"] == 0
    assert acc["persistence"] == 1 and acc["local_loss_change"] == 0 and acc["resolution"] == 0
    assert set(summary["order_parameter"]) == {"heldout_acc", "generalisation_gap", "weight_norm"}  # no Fourier
    floored = order_transitions(_constructed(phi, loss, 1 / 1000)).set_index("order_parameter").loc["heldout_acc"]
    assert floored["jump_ratio"] == pytest.approx(700) and not floored["capped"]  # 0.7 against 1 / 1000


def test_a_glitch_does_not_persist_and_a_falling_loss_is_not_smooth_locally():
    steps = np.arange(0, 1001, 50)
    loss = np.where(steps >= 600, 0.003, 0.01)
    loss[0] = 5.0  # the early drop makes the run's range 5 nats: the 70% fall is 0.14% of it
    glitch = order_transitions(_constructed(np.where(steps == 600, 0.31, 0.3), loss))
    acc = glitch.set_index("order_parameter").loc["heldout_acc"]
    assert acc["step"] == 575 and acc["persistence"] == pytest.approx(0.0, abs=1e-9)
    assert acc["loss_change"] < 0.002 and acc["local_loss_change"] == pytest.approx(0.7)


def test_a_model_that_is_no_lab_run_is_refused_naming_the_fix(tiny_gpt2):
    with pytest.raises(BadInput, match="not a checkpoint of an Atlas Lab run.*lab:modular-addition@0"):
        measure_phase_transitions(tiny_gpt2, None, progress=False)


def test_a_language_model_run_has_no_fourier_sparsity(tmp_path):
    run = train("tiny-corpus", seed=0, out=tmp_path, progress=False)
    table = measure_phase_transitions(load_model(str(run.checkpoints[-1][1]), device="cpu"), None,
                                      progress=False)["phase_transitions"]
    validate_table("phase_transitions", table)
    assert table["fourier_sparsity"].isna().all() and len(table) == len(run.checkpoints)
    assert table["heldout_acc_resolution"].isna().all()  # its held-out tokens are not counted: no floor
    assert "fourier_sparsity" not in set(order_transitions(table)["order_parameter"])
