import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
from _corpora import first_domains
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas import run_instrument, validate_table
from atlas.instruments import block_mgda, block_tightness, measure_tightness
from atlas.instruments._pergrad import domain_gradient, domain_passages, parameters, passage_gradients
from atlas.instruments.tightness import min_norm_weights


@pytest.fixture(scope="module")
def small(starter):
    return first_domains(starter, 3, 2)


def _pairs_table(vectors: dict[str, np.ndarray], block: str = "model") -> pd.DataFrame:
    names = list(vectors)
    rows = [{"block": block, "domain_a": a, "domain_b": b, "dot": vectors[a] @ vectors[b],
             "cosine": vectors[a] @ vectors[b] / np.linalg.norm(vectors[a]) / np.linalg.norm(vectors[b])}
            for i, a in enumerate(names) for b in names[i:]]
    return pd.DataFrame(rows)


def test_cosines_and_conflicts_match_a_hand_computed_case(tiny, small, naive_gradients):
    tables = {"tightness_pairs": measure_tightness(tiny, small, max_tokens=40, progress=False)["tightness_pairs"]}
    tables["tightness"] = block_tightness(tables["tightness_pairs"])
    tables["tightness_mgda"] = block_mgda(tables["tightness_pairs"])
    for name, table in tables.items():
        validate_table(name, table)
    pairs, summary = tables["tightness_pairs"], tables["tightness"].set_index("block")
    naive = {d: naive_gradients(tiny, [p for p in small.passages if p.domain == d], 40) for d in small.domains}
    for block in ["model", *(f"layer.{i}" for i in range(tiny.n_layers))]:
        mean = {d: np.mean([v[block] for v in naive[d]], axis=0) for d in small.domains}  # G_d, by hand
        cosines = []
        for row in pairs[pairs["block"] == block].itertuples():
            u, v = mean[row.domain_a], mean[row.domain_b]
            cos = u @ v / np.linalg.norm(u) / np.linalg.norm(v)
            if row.domain_a == row.domain_b:
                assert row.dot == pytest.approx(u @ u, rel=1e-5)
            else:
                assert row.dot == pytest.approx(u @ v, abs=2e-4 * np.linalg.norm(u) * np.linalg.norm(v))
                cosines.append(cos)
            assert row.cosine == pytest.approx(cos, abs=2e-4)
        got = summary.loc[block]
        assert got["mean_cosine"] == pytest.approx(np.mean(cosines), abs=2e-4)
        assert got["min_cosine"] == pytest.approx(np.min(cosines), abs=2e-4)
        assert got["conflict_share"] == np.mean(np.array(cosines) < 0)
        weights = tables["tightness_mgda"].query("block == @block")["weight"].to_numpy()
        combined = sum(w * mean[d] for w, d in zip(weights, small.domains))
        average = np.mean([mean[d] for d in small.domains], axis=0)
        assert got["mgda_norm_ratio"] == pytest.approx(np.linalg.norm(combined) / np.linalg.norm(average), rel=1e-3)


@pytest.fixture(scope="module")
def one_domain(tiny_gpt2, starter):
    corpus = first_domains(starter, 1, 5)
    params, _ = parameters(tiny_gpt2.model)
    _, _, encoded = domain_passages(tiny_gpt2, corpus, 60)[0]
    singles = list(passage_gradients(tiny_gpt2, encoded, params))
    return encoded, params, [torch.stack([g[k] for g in singles]).mean(0) for k in range(len(params))]


@settings(max_examples=4)
@given(batch_size=st.integers(1, 5))
def test_the_batched_domain_gradient_is_the_mean_of_the_passages_gradients(tiny_gpt2, one_domain, batch_size):
    encoded, params, mean = one_domain
    batched = domain_gradient(tiny_gpt2, encoded, params, batch_size)
    for got, want in zip(batched, mean):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)  # float32 sums in another order


def _kkt_gap(gram: np.ndarray, w: np.ndarray) -> float:
    """How far w is from optimal for min w^T M w on the simplex: max_i (w^T M w - (M w)_i) >= 0 is violated by."""
    return float(np.max(w @ gram @ w - gram @ w))


@settings(max_examples=25)
@given(d=st.integers(2, 6), dim=st.integers(2, 8), seed=st.integers(0, 10_000))
def test_min_norm_weights_satisfy_the_optimality_conditions(d, dim, seed):
    vectors = np.random.default_rng(seed).normal(size=(d, dim))
    gram = vectors @ vectors.T
    w = min_norm_weights(gram)
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
    scale = np.abs(gram).max()
    assert _kkt_gap(gram, w) <= 1e-6 * scale  # no vertex lies below the min-norm point's level
    support = w > 1e-6
    assert np.allclose((gram @ w)[support], w @ gram @ w, atol=1e-6 * scale)  # active vertices lie on it


def test_min_norm_point_of_two_gradients_has_its_closed_form():
    u, v = np.array([1.0, 0.0]), np.array([-0.5, 1.0])
    t = np.clip((v - u) @ v / ((u - v) @ (u - v)), 0, 1)  # w = (t, 1 - t)
    assert min_norm_weights(np.array([[u @ u, u @ v], [u @ v, v @ v]])) == pytest.approx([t, 1 - t], abs=1e-7)


def test_agreeing_domains_are_loose_and_opposed_ones_tight():
    rng = np.random.default_rng(0)
    g = rng.normal(size=10)
    loose = block_tightness(_pairs_table({"a": g, "b": 2 * g, "c": 0.5 * g})).iloc[0]
    assert loose["mean_cosine"] == pytest.approx(1.0) and loose["conflict_share"] == 0
    assert loose["mgda_norm_ratio"] == pytest.approx(0.5 / (3.5 / 3), rel=1e-6)  # the shortest vector, 0.5 g
    tight = block_tightness(_pairs_table({"a": g, "b": -g, "c": g + 0.1 * rng.normal(size=10)})).iloc[0]
    assert tight["conflict_share"] == pytest.approx(2 / 3) and tight["min_cosine"] < -0.9
    assert tight["mgda_norm_ratio"] < 1e-3  # (a + b) / 2 = 0 is in the hull: Pareto-stationary
    cancelling = _pairs_table({"a": g, "b": -g})  # the mean is 0: the ratio is undefined
    assert np.isnan(block_tightness(cancelling)["mgda_norm_ratio"].item())
    validate_table("tightness", block_tightness(cancelling))
    validate_table("tightness_mgda", block_mgda(cancelling))


def test_run_instrument_validates_stores_and_leaves_the_model_as_found(store, tiny_gpt2, small):
    model = tiny_gpt2.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = run_instrument(store, tiny_gpt2, small, "tightness", progress=False, max_tokens=32)
    assert set(store.tables(result.run.id)) == {"tightness_pairs", "tightness", "tightness_mgda"}
    assert result.run.status == "complete"
    assert all(p.grad is None for p in model.parameters()) and not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert len(result.tables["tightness_pairs"]) == (1 + tiny_gpt2.n_layers) * 6  # 3 domains: 3 + 3 pairs a <= b
    assert result.tables["tightness_mgda"].groupby("block")["weight"].sum().to_numpy() == pytest.approx(1.0)


def test_bad_settings_are_one_clear_error(tiny_gpt2, small, starter):
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        measure_tightness(tiny_gpt2, small, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="max_tokens must be at least 1"):
        measure_tightness(tiny_gpt2, small, max_tokens=0, progress=False)
    with pytest.raises(ValueError, match="needs at least two; the corpus has one"):
        measure_tightness(tiny_gpt2, first_domains(starter, 1, 3), progress=False)


@pytest.mark.slow
def test_smollm2_cosines_match_an_independent_backward(smollm2, shared_corpus, naive_gradients):
    corpus = first_domains(shared_corpus, 2, 2)
    tables = measure_tightness(smollm2, corpus, max_tokens=16, progress=False)
    validate_table("tightness_pairs", tables["tightness_pairs"])
    validate_table("tightness", block_tightness(tables["tightness_pairs"]))
    a, b = ({k: np.mean([v[k] for v in naive_gradients(smollm2, [p for p in corpus.passages if p.domain == d], 16)],
                        axis=0) for k in ("model", "layer.29")} for d in corpus.domains)
    pairs = tables["tightness_pairs"]
    for block in ("model", "layer.29"):
        cross = pairs[(pairs["block"] == block) & (pairs["domain_a"] != pairs["domain_b"])]["cosine"].item()
        assert cross == pytest.approx(a[block] @ b[block] / np.linalg.norm(a[block]) / np.linalg.norm(b[block]),
                                      abs=2e-4)
    assert list(itertools.chain(pairs["block"].unique()))[:2] == ["model", "layer.0"]


def test_measure_from_the_command_line(tmp_path):
    from click.testing import CliRunner

    from atlas.cli import main

    result = CliRunner().invoke(main, ["measure", "tightness", "--model", "tiny-gpt2", "--corpus", "starter",
                                       "--per-domain", "2", "--max-tokens", "16", "--db", f"sqlite:///{tmp_path}/a.db",
                                       "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out["tables"]) == {"tightness_pairs", "tightness", "tightness_mgda"}
    assert len(out["tables"]["tightness"]) == 3 and out["settings"]["max_tokens"] == 16
