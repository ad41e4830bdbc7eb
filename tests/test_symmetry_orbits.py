"""The symmetry_orbits instrument: random permutations keep the function on GPT-2, OPT and Llama shapes (grouped-
query heads included) while moving the weights, and weight matching undoes a permutation of a Lab checkpoint
(distance and barrier back to ~0), while two seeds stay apart."""

import shutil

import pytest

from atlas import load_model, validate_table
from atlas._errors import BadInput
from atlas.instruments import measure_symmetry_orbits
from atlas.instruments._symmetry import permute, random_permutation
from atlas.lab import train

TABLES = ("symmetry_orbits", "symmetry_matching", "symmetry_matching_chunks")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    return [train("tiny-modular", seed=s, out=out, progress=False).checkpoints[-1][1] for s in (0, 1)]


@pytest.fixture(scope="module")
def permuted_copy(runs, tmp_path_factory):
    """Seed 0's last checkpoint with every family permuted, saved as a Lab checkpoint of the same run."""
    where = tmp_path_factory.mktemp("permuted") / "step-30"
    shutil.copytree(runs[0], where)
    lm = load_model(str(runs[0]), device="cpu")
    permute(lm.model, random_permutation(lm.model, 7, residual=True)).save_pretrained(where)
    return load_model(str(where), device="cpu")


def test_permutations_keep_the_function_and_move_the_weights(tiny, starter):
    tables = measure_symmetry_orbits(tiny, starter.sample(1), permutations=2, progress=False)
    for name in TABLES:
        validate_table(name, tables[name])
    orbit = tables["symmetry_orbits"]
    assert len(orbit) == 8 and set(orbit["family"]) == {"mlp", "heads", "residual", "all"}
    assert orbit["max_abs_dlogit"].max() < 1e-4  # float32 rounding only (tiny-llama: 4 heads on 2 KV heads)
    assert (orbit["parameter_distance"] > 0.05 * orbit["weight_norm"]).all()
    assert tables["symmetry_matching"].empty and tables["symmetry_matching_chunks"].empty  # no other model


def test_matching_undoes_a_permutation_of_a_lab_checkpoint(runs, permuted_copy, starter):
    lm = load_model(str(runs[0]), device="cpu")
    tables = measure_symmetry_orbits(lm, starter, other=permuted_copy, permutations=1, points=5, chunks=2,
                                     progress=False)
    for name in TABLES:
        validate_table(name, tables[name])
    matching = tables["symmetry_matching"].set_index(["alignment", "definition"])
    before, after = matching.loc["before"], matching.loc["after"]
    assert (before["parameter_distance"] > 1.0).all() and (after["parameter_distance"] < 1e-5).all()
    assert (after["barrier"] < 1e-5).all()  # the line from a point to itself
    assert after["loss_other"].iloc[0] == pytest.approx(after["loss_model"].iloc[0], rel=1e-5)
    assert (after["max_abs_dlogit_other"] < 1e-4).all() and (before["max_abs_dlogit_other"] == 0).all()
    chunks = tables["symmetry_matching_chunks"]
    assert len(chunks) == 2 * 2 * 2 and chunks.groupby(["alignment", "definition"])["n_pairs"].sum().eq(
        int(before["n_pairs"].iloc[0])).all()


def test_two_seeds_stay_apart_after_matching(runs, starter):
    a, b = (load_model(str(r), device="cpu") for r in runs)
    matching = measure_symmetry_orbits(a, starter, other=b, permutations=1, points=3, chunks=1,
                                       progress=False)["symmetry_matching"].set_index("alignment")
    assert 0.1 < matching.loc["after", "parameter_distance"].iloc[0] <= matching.loc["before", "parameter_distance"].iloc[0]


def test_matching_needs_a_seed_of_the_same_modular_run(runs, tiny_gpt2, starter):
    lm = load_model(str(runs[0]), device="cpu")
    with pytest.raises(BadInput, match="not a checkpoint of an Atlas Lab run"):
        measure_symmetry_orbits(lm, starter, other=tiny_gpt2, progress=False)
    with pytest.raises(BadInput, match="tiny-gpt2 is not a checkpoint of an Atlas Lab run"):
        measure_symmetry_orbits(tiny_gpt2, starter, other=lm, progress=False)


def test_a_random_permutation_is_the_same_function_as_far_away_as_another_seed(runs, starter):
    """Once P9a, a positive control: every permutation of every family together keeps the logits (max |Δlogit| <=
    1e-4) and moves the weights at least half as far as the two seeds lie apart (by geometry: a random permutation
    of d units moves a weight matrix about as far as an independent draw of it)."""
    a, b = (load_model(str(r), device="cpu") for r in runs)
    tables = measure_symmetry_orbits(a, starter, other=b, permutations=8, families="all", points=3, chunks=1,
                                     progress=False)
    seeds = tables["symmetry_matching"].query("alignment == 'before'")["parameter_distance"].iloc[0]
    orbit = tables["symmetry_orbits"]
    assert len(orbit) == 8 and (orbit["max_abs_dlogit"] <= 1e-4).all()
    assert (orbit["parameter_distance"] >= 0.5 * seeds).all()
