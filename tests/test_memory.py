import numpy as np
import pandas as pd
import pytest

from atlas import Corpus, SettingsError, Store, load_model, run_instrument
from atlas.instruments.memory import curricula, matched_endpoints
from atlas.lab import load_recipe, train
from atlas.lab._data import training_batches


def _domains(recipe, seed=0) -> list[set[str]]:
    """The domains of each training batch of a run, step by step."""
    return [set(batch.domains) for batch in training_batches(recipe, seed)]


def test_the_curricula_train_on_different_data_streams():
    given, reverse = curricula(load_recipe("tiny-corpus"), "reversed").values()
    _, shuffled = curricula(load_recipe("tiny-corpus"), "shuffled").values()
    half = given.steps // 2
    a, b = ["technical_documentation"], ["poetry"]
    assert list(given.data.curriculum) == a + b and list(reverse.data.curriculum) == b + a
    # the stream itself: phase by phase one domain only, in the order of the curriculum
    assert _domains(given) == [set(a)] * half + [set(b)] * half
    assert _domains(reverse) == [set(b)] * half + [set(a)] * half
    mixed = _domains(shuffled)
    assert set().union(*mixed[:half]) == set(a + b) and set().union(*mixed[half:]) == set(a + b)
    # the same seed is the same stream, bit for bit; the orders draw other windows
    again = [batch.input_ids for batch in training_batches(given, 0)]
    assert all((x == y).all() for x, y in zip(again, (batch.input_ids for batch in training_batches(given, 0))))
    reversed_ids = [batch.input_ids for batch in training_batches(reverse, 0)]
    assert not all(x.shape == y.shape and (x == y).all() for x, y in zip(again, reversed_ids))


def test_matched_endpoints_take_the_common_reachable_target_on_the_way_down():
    runs = {"a": pd.DataFrame({"step": [0, 10, 20, 30, 40], "heldout_loss": [5.0, 1.0, 2.6, 2.2, 2.5]}),
            "b": pd.DataFrame({"step": [0, 10, 20, 30, 40], "heldout_loss": [5.0, 3.0, 2.5, 2.9, 3.0]})}
    # before step 20 a is lower (1.0) but outside the window; in it, b's best is 2.5; a's closest is 2.5 at
    # step 40, past a's minimum (step 30, memorising), so a's endpoint is 2.6 at step 20 on the way down
    target, chosen = matched_endpoints(runs, 20)
    assert target == 2.5 and chosen == {"a": (20, 2.6), "b": (20, 2.5)}


def test_memory_needs_a_lab_recipe_with_a_domain_order(tiny_gpt2, starter):
    with pytest.raises(SettingsError, match="domain order"):
        curricula(load_recipe("corpus-lm"), "reversed")  # shuffled: nothing to reverse
    with pytest.raises(SettingsError, match="not a Lab checkpoint"):
        run_instrument(Store("sqlite://"), tiny_gpt2, starter, "memory", progress=False)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The instrument through CISP on tiny-corpus (2 seeds x 2 orders, seconds), in a fresh Lab cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATLAS_CACHE", str(tmp_path_factory.mktemp("cache")))
        recipe = load_recipe("tiny-corpus")
        lm = load_model(str(train(recipe, seed=0, progress=False).checkpoints[-1][1]), device="cpu")
        store = Store("sqlite://")
        result = run_instrument(store, lm, Corpus("unused", ()), "memory", seeds=2, lanczos_steps=8,
                                hutchinson_samples=4, progress=False, session="s1")
        runs = {(label, s): train(r, seed=s, progress=False) for label, r in curricula(recipe, "reversed").items()
                for s in range(2)}
        trained = [(e.session, e.instrument, e.model) for e in store.events() if e.instrument == "lab"]
    return result.tables, runs, trained


def test_every_run_memory_trains_is_stored_in_the_session(measured):
    *_, trained = measured
    assert len(trained) == 4 and {session for session, *_ in trained} == {"s1"}
    assert {model.rsplit("@", 1)[1] for *_, model in trained} == {"0", "1"}


def test_memory_end_to_end_on_a_tiny_recipe(measured):
    tables, runs, _ = measured
    memory, domains, pairs = tables["memory"], tables["memory_domains"], tables["memory_pairs"]
    assert len(memory) == 4 and set(memory["curriculum"]) == {"technical_documentation>poetry",
                                                             "poetry>technical_documentation"}
    assert len(pairs) == 6 and pairs["same_curriculum"].sum() == 2
    for row in memory.itertuples():
        trajectory = runs[row.curriculum, row.seed].trajectory
        window = trajectory[trajectory["step"] >= 6].reset_index(drop=True)  # the last of two phases of 12 steps
        window = window.iloc[:int(window["heldout_loss"].argmin()) + 1]  # on the way down
        assert row.step in set(window["step"])
        assert abs(row.gap) == pytest.approx(np.abs(window["heldout_loss"] - row.target).min())
        # the per-domain profile, token-weighted, is the trainer's own held-out loss (another code path)
        mine = domains[(domains["curriculum"] == row.curriculum) & (domains["seed"] == row.seed)]
        assert (mine["loss"] * mine["n_tokens"]).sum() / mine["n_tokens"].sum() == pytest.approx(row.heldout_loss,
                                                                                                  rel=1e-5)
        assert row.lambda_max > 0 > row.lambda_min and row.trace > 0
    assert memory["target"].nunique() == 1
    # one seed shares its initial weights across curricula: those pairs lie closer than pairs of two seeds
    same_seed = pairs[pairs["seed_a"] == pairs["seed_b"]]
    other_seed = pairs[pairs["seed_a"] != pairs["seed_b"]]
    assert same_seed["parameter_distance"].max() < other_seed["parameter_distance"].min()
