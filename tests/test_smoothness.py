import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from _corpora import first_domains
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas import Corpus, Passage, run_instrument, validate_table
from atlas._anatomy import decoder_layers
from atlas.instruments import domain_smoothness, measure_smoothness
from atlas.instruments.smoothness import pair_statistics


@pytest.fixture(scope="module")
def small(starter):
    return first_domains(starter, 2, 3)


def _gram_table(vectors: list[np.ndarray], domain: str = "d", block: str = "model") -> pd.DataFrame:
    a, b = np.triu_indices(len(vectors))
    k = np.array([[u @ v for v in vectors] for u in vectors])
    return pd.DataFrame({"domain": domain, "block": block, "passage_a": [f"p{i}" for i in a],
                         "passage_b": [f"p{j}" for j in b], "dot": k[a, b]})


def _by_hand(vectors: list[np.ndarray]) -> dict[str, float]:
    """B_simple as McCandlish et al. (2018, appendix A) estimate it from B_small = 1 and B_big = n, and the mean
    cosine over distinct pairs, written out."""
    n = len(vectors)
    g = np.stack(vectors)
    big = np.sum(g.mean(0) ** 2)  # |G_Bbig|^2
    small = np.mean(np.sum(g ** 2, 1))  # mean |G_Bsmall|^2 over B_small = 1 batches
    signal = (n * big - small) / (n - 1)
    noise = (small - big) / (1 - 1 / n)
    cosines = [u @ v / np.linalg.norm(u) / np.linalg.norm(v) for u, v in itertools.permutations(vectors, 2)]
    return {"signal": signal, "noise": noise, "b_simple": noise / signal, "mean_cosine": float(np.mean(cosines)),
            "trace_cov": np.sum((g - g.mean(0)) ** 2) / (n - 1)}


def test_gram_and_statistics_match_a_hand_computed_case(tiny, small, naive_gradients):
    table = measure_smoothness(tiny, small, max_tokens=40, progress=False)["smoothness_gram"]
    validate_table("smoothness_gram", table)
    summary = domain_smoothness(table, n_resamples=200).set_index(["domain", "block"])
    validate_table("smoothness", summary.reset_index())
    for domain in small.domains:
        passages = [p for p in small.passages if p.domain == domain]
        naive = naive_gradients(tiny, passages, 40)
        for block in ["model", *(f"layer.{i}" for i in range(tiny.n_layers))]:
            vectors = [v[block] for v in naive]
            rows = table[(table["domain"] == domain) & (table["block"] == block)]
            index = {p.id: k for k, p in enumerate(passages)}
            for row in rows.itertuples():
                i, j = index[row.passage_a], index[row.passage_b]
                if i == j:  # exact, up to float32 rounding in two different computations
                    assert row.dot == pytest.approx(vectors[i] @ vectors[i], rel=1e-5)
                else:  # float16 storage
                    scale = np.linalg.norm(vectors[i]) * np.linalg.norm(vectors[j])
                    assert row.dot == pytest.approx(vectors[i] @ vectors[j], abs=2e-4 * scale)
            hand, got = _by_hand(vectors), summary.loc[(domain, block)]
            assert hand["noise"] == pytest.approx(hand["trace_cov"], rel=1e-9)  # the two forms of tr(Sigma) agree
            for name in ("signal", "noise", "b_simple", "mean_cosine"):
                assert got[name] == pytest.approx(hand[name], rel=1e-3, abs=1e-6), (domain, block, name)


@settings(max_examples=15)
@given(n=st.integers(2, 6), dim=st.integers(2, 8), seed=st.integers(0, 10_000))
def test_statistics_of_a_gram_table_are_the_formulas(n, dim, seed):
    rng = np.random.default_rng(seed)
    vectors = list(rng.normal(size=(n, dim)) + rng.normal(size=dim))  # a shared direction plus noise
    got = domain_smoothness(_gram_table(vectors), n_resamples=50).iloc[0]
    hand = _by_hand(vectors)
    assert got["signal"] == pytest.approx(hand["signal"], rel=1e-9, abs=1e-12)
    assert got["noise"] == pytest.approx(hand["noise"], rel=1e-9)
    assert got["mean_cosine"] == pytest.approx(hand["mean_cosine"], rel=1e-9, abs=1e-12)
    if hand["signal"] > 0:
        assert got["b_simple"] == pytest.approx(hand["b_simple"], rel=1e-9)
    else:
        assert np.isnan(got["b_simple"])


@settings(max_examples=15)
@given(n=st.integers(2, 5), draws=st.lists(st.integers(0, 4), min_size=2, max_size=7), seed=st.integers(0, 10_000))
def test_a_resample_averages_over_pairs_of_distinct_passages(n, draws, seed):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 4))
    gram = vectors @ vectors.T
    drawn = [d % n for d in draws]
    counts = np.bincount(drawn, minlength=n)
    phi, cosine = pair_statistics(gram, counts)
    pairs = [(i, j) for i, j in itertools.permutations(drawn, 2) if i != j]  # positions p != q, other passages
    if not pairs:
        assert np.isnan(phi) and np.isnan(cosine)
        return
    cos = gram / np.sqrt(np.outer(np.diag(gram), np.diag(gram)))
    assert cosine == pytest.approx(np.mean([cos[i, j] for i, j in pairs]), rel=1e-9, abs=1e-12)
    assert phi == pytest.approx(np.mean([gram[i, j] for i, j in pairs])
                                / np.mean([(gram[i, i] + gram[j, j]) / 2 for i, j in pairs]), rel=1e-9, abs=1e-12)
    assert -1 - 1e-12 <= phi <= 1 + 1e-12


def test_cis_bracket_the_estimates_and_b_simple_is_null_without_signal():
    rng = np.random.default_rng(0)
    shared = rng.normal(size=20)
    agreeing = list(shared + 0.5 * rng.normal(size=(8, 20)))
    opposed = [v * (-1) ** i for i, v in enumerate(agreeing)]  # the same vectors, every other one flipped
    table = pd.concat([_gram_table(agreeing, "agreeing"), _gram_table(opposed, "opposed")])
    summary = domain_smoothness(table, n_resamples=500).set_index("domain")
    validate_table("smoothness", summary.reset_index())
    row = summary.loc["agreeing"]
    assert row["b_simple_ci_low"] <= row["b_simple"] <= row["b_simple_ci_high"]
    assert row["cosine_ci_low"] <= row["mean_cosine"] <= row["cosine_ci_high"]
    assert row["mean_cosine"] > 0.5
    row = summary.loc["opposed"]
    assert row["signal"] < 0 and row["mean_cosine"] < 0
    assert np.isnan(row["b_simple"]) and np.isnan(row["b_simple_ci_high"])  # undefined, and unbounded above
    assert row["noise"] > 0


def test_run_instrument_validates_stores_and_leaves_the_model_as_found(store, tiny_gpt2, small):
    model = tiny_gpt2.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frozen = decoder_layers(model)[0].mlp.c_fc.weight
    frozen.requires_grad_(False)
    try:
        result = run_instrument(store, tiny_gpt2, small, "smoothness", progress=False, bootstrap_resamples=100,
                                max_tokens=32)
        assert not frozen.requires_grad
    finally:
        frozen.requires_grad_(True)
    assert set(store.tables(result.run.id)) == {"smoothness_gram", "smoothness"}
    assert result.run.status == "complete" and not result.reused
    assert all(p.grad is None for p in model.parameters()) and not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    summary = result.tables["smoothness"]
    assert len(summary) == 2 * (1 + tiny_gpt2.n_layers)
    assert np.isfinite(summary[["grad_sq_norm", "signal", "noise", "mean_cosine"]].to_numpy()).all()


def test_bad_settings_and_single_passage_domains_are_one_clear_error(tiny_gpt2, small):
    with pytest.raises(ValueError, match="max_tokens must be at least 1"):
        measure_smoothness(tiny_gpt2, small, max_tokens=0, progress=False)
    lone = Corpus("lone", (*small.passages, Passage("lone-1", "lonely_domain", "Only one passage here.")))
    with pytest.raises(ValueError, match="at least two per domain; lonely_domain has one"):
        measure_smoothness(tiny_gpt2, lone, progress=False)


@pytest.mark.slow
def test_smollm2_gram_matches_an_independent_backward(smollm2, shared_corpus, naive_gradients):
    corpus = first_domains(shared_corpus, 2, 2)
    table = measure_smoothness(smollm2, corpus, max_tokens=16, progress=False)["smoothness_gram"]
    validate_table("smoothness_gram", table)
    summary = domain_smoothness(table, n_resamples=100)
    validate_table("smoothness", summary)
    assert len(summary) == 2 * 31
    domain = corpus.domains[0]
    naive = naive_gradients(smollm2, [p for p in corpus.passages if p.domain == domain], 16)
    for block in ("model", "layer.0", "layer.29"):
        rows = table[(table["domain"] == domain) & (table["block"] == block)].reset_index(drop=True)
        u, v = naive[0][block], naive[1][block]
        # two float32 backward passes through 30 layers agree to about 1e-4 in norm (as in test_gradient's smollm2
        # test), so 5e-4 on squared norms and products; the half-precision storage adds less than 2e-4
        assert rows["dot"][0] == pytest.approx(u @ u, rel=5e-4) and rows["dot"][2] == pytest.approx(v @ v, rel=5e-4)
        assert rows["dot"][1] == pytest.approx(u @ v, abs=5e-4 * np.linalg.norm(u) * np.linalg.norm(v))


def test_dots_rounded_past_cauchy_schwarz_are_clipped_so_noise_stays_non_negative():
    """Two copies of one passage: their half-precision dot can round above the exact squared norms."""
    gram = pd.DataFrame({"domain": "d", "block": "model", "passage_a": ["a", "a", "b"], "passage_b": ["a", "b", "b"],
                         "dot": [4.0, 4.002, 4.0]})
    [row] = domain_smoothness(gram, n_resamples=200).to_dict("records")
    assert row["mean_cosine"] == pytest.approx(1.0) and row["mean_cosine"] <= 1.0
    assert row["noise"] >= 0.0 and row["noise"] == pytest.approx(0.0, abs=1e-12)
