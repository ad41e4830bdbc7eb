import inspect

import numpy as np
import pandas as pd
import pytest
import torch
from _reference import SHORT, dense_hessian
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas import load_model, run_instrument
from atlas._anatomy import attention_params, eager_attention, mlp_params
from atlas._cisp import model_checksum
from atlas.instruments import INSTRUMENTS, measure_perplexity
from atlas.instruments._lanczos import hutchinson, lanczos, rademacher
from atlas.instruments.hessian import (BlockHessian, PyHessianLM, hessian_batch, masked_mean_nll, mean_nll,
                                       measure_hessian, only_block_requires_grad)
from atlas.models import tiny_model

ALL = 10_000  # max_tokens: every passage of SHORT, untruncated


@pytest.fixture(scope="module")
def micro():
    """A 1-layer GPT-2 (2 heads, hidden 8) whose attention block has 288 parameters: a Hessian small
    enough to form. Initialised with std 0.2 so that the extreme eigenvalues stand apart."""
    return tiny_model("gpt2", name="micro-gpt2", n_layer=1, n_head=2, n_embd=8, n_positions=256, initializer_range=0.2)


@pytest.fixture(scope="module")
def dense(micro):
    """The attention block's full Hessian [288, 288] by torch.autograd.functional.hessian, float64, with its
    loss written independently of the instrument (``_reference.dense_hessian``)."""
    params = attention_params(micro.model, 0)
    names = [name for name, p in micro.model.named_parameters() if any(p is q for q in params)]
    return dense_hessian(micro, names, SHORT)


@pytest.fixture(scope="module")
def atlas_micro(micro):
    return measure_hessian(micro, SHORT, blocks="attention", top_k=3, lanczos_steps=24, hutchinson_samples=30,
                           slq_runs=2, max_tokens=ALL, progress=False)["hessian"]


# --- the numerical core on plain matrices ---------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_lanczos_finds_both_ends_of_a_known_spectrum(seed):
    rng = np.random.default_rng(seed)
    n = 80
    spectrum = np.concatenate([rng.uniform(-1, 1, n - 4), [6.0, 4.0, -5.0, -3.0]])
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = torch.tensor(q @ np.diag(spectrum) @ q.T, dtype=torch.float32)
    found, used = lanczos(lambda v: A @ v, rademacher(n, torch.Generator().manual_seed(seed), "cpu"), 30)
    assert used == 30
    top, bottom = found.values[::-1][:2], found.values[:2]
    np.testing.assert_allclose(top, [6.0, 4.0], rtol=1e-4)
    np.testing.assert_allclose(bottom, [-5.0, -3.0], rtol=1e-4)
    ok = found.converged(1e-3)
    assert ok[[0, 1, -2, -1]].all() and not ok.all()  # extremes converge first, the crowded middle not in 30 steps
    # the residual bound holds: an eigenvalue lies within |beta_m s_mi| of every Ritz value
    distance = np.abs(found.values[:, None] - spectrum[None]).min(axis=1)
    assert (distance <= found.residuals + 1e-4).all()
    np.testing.assert_allclose(found.weights.sum(), 1.0, rtol=1e-6)


def test_lanczos_is_exact_once_the_krylov_space_is_exhausted():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(12, 12))
    A = torch.tensor(A + A.T, dtype=torch.float32)
    found, used = lanczos(lambda v: A @ v, torch.ones(12), 50)
    assert used == 12
    np.testing.assert_allclose(found.values, np.linalg.eigvalsh(A.double().numpy()), atol=1e-4)
    assert found.converged(1e-3).all()


def test_lanczos_stops_when_asked():
    A = torch.diag(torch.arange(1.0, 101.0))
    found, used = lanczos(lambda v: A @ v, torch.ones(100), 60, stop=lambda r: r.converged(1e-3)[-1])
    assert used < 60 and found.values[-1] == pytest.approx(100.0, rel=1e-3)


def test_hutchinson_is_exact_on_a_diagonal_and_unbiased_otherwise():
    generator = torch.Generator().manual_seed(0)
    D = torch.linspace(-2.0, 5.0, 50)
    mean, se = hutchinson(lambda v: D * v, 50, 5, generator, "cpu")
    assert mean == pytest.approx(float(D.sum()), rel=1e-6) and se == pytest.approx(0.0, abs=1e-5)
    rng = np.random.default_rng(0)
    A = rng.normal(size=(50, 50))
    A = A + A.T
    mean, se = hutchinson(lambda v: torch.tensor(A, dtype=torch.float32) @ v, 50, 400, generator, "cpu")
    expected_se = np.sqrt(2 * ((A ** 2).sum() - (np.diag(A) ** 2).sum()) / 400)  # Rademacher variance
    assert abs(mean - np.trace(A)) < 4 * expected_se
    assert se == pytest.approx(expected_se, rel=0.25)


# --- the instrument against the full Hessian ------------------------------------------------

def test_eigenvalues_at_both_ends_match_the_full_hessian(atlas_micro, dense):
    exact = np.linalg.eigvalsh(dense)  # ascending
    rows = atlas_micro[atlas_micro["kind"] == "eigenvalue"].set_index("index")
    assert sorted(rows.index) == [-3, -2, -1, 0, 1, 2]
    assert rows["converged"].all() and (rows["n_params"] == 288).all()
    assert rows["n_hvp"].iloc[0] < 24  # stopped early once both ends converged
    for i in range(3):
        assert rows.loc[i, "value"] == pytest.approx(exact[-1 - i], rel=1e-3)
        assert rows.loc[-1 - i, "value"] == pytest.approx(exact[i], rel=1e-3)
    assert exact[0] < 0 < exact[-1]  # a saddle: power iteration's largest magnitude would not tell both ends


def test_trace_matches_the_full_hessian_within_its_standard_error(atlas_micro, dense):
    trace = atlas_micro[atlas_micro["kind"] == "trace"].iloc[0]
    offdiag = (dense ** 2).sum() - (np.diag(dense) ** 2).sum()
    assert trace["n_hvp"] == 30
    assert trace["stderr"] == pytest.approx(np.sqrt(2 * offdiag / 30), rel=0.35)
    assert abs(trace["value"] - np.trace(dense)) < 4 * trace["stderr"]


def test_density_is_a_probability_over_the_spectrum(atlas_micro, dense):
    density = atlas_micro[atlas_micro["kind"] == "density"]
    exact = np.linalg.eigvalsh(dense)
    assert len(density) == 48 and density["n_hvp"].iloc[0] == 48  # 2 runs x 24 steps
    assert (density["weight"] >= 0).all() and density["weight"].sum() == pytest.approx(1.0, abs=1e-6)
    assert density["value"].min() >= exact[0] - 1e-3 and density["value"].max() <= exact[-1] + 1e-3
    # the outermost nodes are the converged extremes; the quadrature's mean estimates tr(H)/n
    assert density.loc[density["value"].idxmax(), "converged"]
    mean = float((density["weight"] * density["value"]).sum())  # = mean of v^T H v over the 2 start vectors
    offdiag = (dense ** 2).sum() - (np.diag(dense) ** 2).sum()
    assert abs(mean * 288 - np.trace(dense)) < 4 * np.sqrt(2 * offdiag / 2)


def test_pyhessian_backend_agrees_with_atlas_and_the_full_hessian(micro, atlas_micro, dense):
    table = measure_hessian(micro, SHORT, backend="pyhessian", blocks="attention", top_k=1, hutchinson_samples=20,
                            slq_runs=1, lanczos_steps=10, max_tokens=ALL, progress=False)["hessian"]
    exact = np.linalg.eigvalsh(dense)
    largest_magnitude = exact[np.abs(exact).argmax()]
    top = table[(table["kind"] == "eigenvalue")].iloc[0]
    assert top["backend"] == "pyhessian" and top["n_hvp"] > 2
    assert top["value"] == pytest.approx(largest_magnitude, rel=1e-2)
    atlas_eigen = atlas_micro[atlas_micro["kind"] == "eigenvalue"]["value"]
    assert top["value"] == pytest.approx(atlas_eigen[atlas_eigen.abs().idxmax()], rel=1e-2)
    trace = table[table["kind"] == "trace"].iloc[0]
    assert trace["backend"] == "pyhessian" and trace["n_hvp"] == 20
    assert abs(trace["value"] - np.trace(dense)) < 4 * trace["stderr"]
    assert set(table.loc[table["kind"] == "density", "backend"]) == {"atlas"}  # pyhessian's density() is broken


# --- the loss, the batch, the products --------------------------------------------------------

def test_loss_is_token_weighted_and_padding_masked(tiny):
    ids, mask = hessian_batch(tiny, SHORT, ALL)
    assert ids.shape == (3, 30) and int(mask.sum()) == 13 + 13 + 30
    per_passage = measure_perplexity(tiny, SHORT, batch_size=1, progress=False)["perplexity"]
    pooled = per_passage["nll_sum"].sum() / per_passage["n_tokens"].sum()  # not a mean of per-passage means
    with torch.no_grad():
        assert float(mean_nll(tiny.model, ids, mask)) == pytest.approx(pooled, rel=1e-5)
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        assert float(masked_mean_nll(PyHessianLM(tiny.model)(torch.stack([ids, mask])), targets)) == \
            pytest.approx(pooled, rel=1e-5)


def test_batch_takes_domains_round_robin_and_stops_at_the_budget(tiny_gpt2, starter):
    ids, mask = hessian_batch(tiny_gpt2, starter, 700)
    assert int(mask[:, 1:].sum()) == 700
    firsts = [next(p for p in starter.passages if p.domain == d) for d in starter.domains]
    rows = {tuple(r[m.bool()].tolist()) for r, m in zip(ids, mask)}
    full = [tuple([tiny_gpt2.doc_start_id] + tiny_gpt2.tokenizer(p.text, add_special_tokens=False).input_ids)
            for p in firsts]
    taken = [f for f in full if f in rows]
    assert taken == full[: len(taken)] and len(taken) == len(rows) - 1  # whole first passages, one per domain
    truncated = (rows - set(taken)).pop()
    assert full[len(taken)][: len(truncated)] == truncated  # the next domain's first passage, cut to fit


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_hvp_is_symmetric(tiny_gpt2, seed):
    ids, mask = hessian_batch(tiny_gpt2, SHORT, ALL)
    params = mlp_params(tiny_gpt2.model, 0)
    with eager_attention(tiny_gpt2.model), torch.enable_grad(), only_block_requires_grad(tiny_gpt2.model, params):
        H = BlockHessian(params, mean_nll(tiny_gpt2.model, ids, mask))
        generator = torch.Generator().manual_seed(seed)
        u, v = torch.randn(H.n, generator=generator), torch.randn(H.n, generator=generator)
        uHv, vHu = float(u @ H(v)), float(v @ H(u))
        scale = float(H(u).norm() * v.norm())
    assert H.count == 3 and abs(uHv - vHu) <= 1e-4 * scale


# --- through CISP: blocks, schema, isolation ------------------------------------------------

def test_per_block_rows_on_every_layout(tiny, store):
    before = model_checksum(tiny.model)
    table = run_instrument(store, tiny, SHORT, "hessian", progress=False, blocks="attention", top_k=2,
                           lanczos_steps=6, hutchinson_samples=2, slq_runs=1, max_tokens=ALL).tables["hessian"]
    assert model_checksum(tiny.model) == before
    assert list(dict.fromkeys(table["block"])) == ["layer.0.attention", "layer.1.attention"]
    for block, rows in table.groupby("block"):
        layer = int(block.split(".")[1])
        eigen = rows[rows["kind"] == "eigenvalue"].set_index("index")["value"]
        assert sorted(eigen.index) == [-2, -1, 0, 1] and eigen[0] >= eigen[1] >= eigen[-2] >= eigen[-1]
        assert (rows["kind"] == "trace").sum() == 1 and (rows["kind"] == "density").sum() == 6
        assert (rows["n_params"] == sum(p.numel() for p in attention_params(tiny.model, layer))).all()


def test_layers_selects_blocks(tiny_gpt2):
    table = measure_hessian(tiny_gpt2, SHORT, blocks="layers", layers="1", top_k=1, lanczos_steps=4,
                            hutchinson_samples=0, slq_runs=0, max_tokens=16, progress=False)["hessian"]
    assert list(table["block"]) == ["layer.1.attention"] * 2 + ["layer.1.mlp"] * 2
    assert set(table["kind"]) == {"eigenvalue"} and (table["n_hvp"] <= 4).all()
    whole = measure_hessian(tiny_gpt2, SHORT, top_k=1, lanczos_steps=4, hutchinson_samples=0, slq_runs=0,
                            max_tokens=16, progress=False)["hessian"]
    assert set(whole["block"]) == {"model"}
    assert whole["n_params"].iloc[0] == sum(p.numel() for p in tiny_gpt2.model.parameters())


@pytest.mark.parametrize("backend", ["atlas", "pyhessian"])
def test_model_is_left_as_found(micro, backend):
    model = micro.model
    frozen = model.transformer.wpe.weight
    before = model_checksum(model)
    model.set_attn_implementation("sdpa")
    frozen.requires_grad_(False)
    model.train()
    try:
        measure_hessian(micro, SHORT, backend=backend, blocks="attention", top_k=1, lanczos_steps=4,
                        hutchinson_samples=2, slq_runs=1, max_tokens=16, progress=False)["hessian"]
        assert model.config._attn_implementation == "sdpa" and model.training
        assert not frozen.requires_grad
        assert all(p.requires_grad for p in model.parameters() if p is not frozen)
        assert all(p.grad is None for p in model.parameters())
        assert model_checksum(model) == before
    finally:
        model.set_attn_implementation("eager")
        frozen.requires_grad_(True)
        model.eval()


@pytest.mark.parametrize("settings_, message", [
    ({"backend": "scipy"}, "unknown backend"),
    ({"blocks": "heads"}, "unknown blocks"),
    ({"blocks": "attention", "layers": "0,7"}, r"layers \[7\] out of range"),
    ({"blocks": "mlp", "layers": "first"}, "comma list"),
    ({"top_k": 0}, "top_k"),
])
def test_bad_settings_are_refused(tiny_gpt2, settings_, message):
    with pytest.raises(ValueError, match=message):
        measure_hessian(tiny_gpt2, SHORT, progress=False, **settings_)["hessian"]


def test_registry_defaults_are_the_function_defaults():
    signature = inspect.signature(measure_hessian).parameters
    entry = INSTRUMENTS["hessian"]
    assert entry.defaults == {k: p.default for k, p in signature.items() if k not in ("lm", "corpus", "progress")}
    assert entry.table == "hessian" and "viscosity" in entry.terms


@pytest.mark.slow
def test_smollm2_attention_block_with_a_tiny_budget(smollm2, shared_corpus, store):
    """The last layer's attention (the shortest double backward) on 32 tokens: seconds, not minutes."""
    result = run_instrument(store, smollm2, shared_corpus, "hessian", progress=False, blocks="attention",
                            layers="29", top_k=1, lanczos_steps=4, hutchinson_samples=2, slq_runs=0, max_tokens=32)
    table = result.tables["hessian"]
    eigen = table[table["kind"] == "eigenvalue"].set_index("index")
    assert set(table["block"]) == {"layer.29.attention"}
    assert eigen.loc[0, "value"] > 0 and eigen.loc[0, "value"] > eigen.loc[-1, "value"]
    assert (eigen["n_hvp"] <= 4).all() and table.loc[table["kind"] == "trace", "n_hvp"].item() == 2


def test_a_bfloat16_model_is_measured_in_float32_through_a_copy(starter):
    """The products run on a float32 copy of the bf16 weights: the same numbers as a float32 model holding
    exactly those weights, and the bf16 model itself is left as it was."""
    bf16 = load_model("tiny-gpt2", device="cpu", dtype="bfloat16")
    rounded = load_model("tiny-gpt2", device="cpu")
    rounded.model.load_state_dict({k: v.float() for k, v in bf16.model.state_dict().items()})
    settings_ = dict(blocks="attention", layers="0", top_k=1, lanczos_steps=6, hutchinson_samples=2, slq_runs=0,
                     max_tokens=48, tokens_per_passage=6, progress=False)
    before = model_checksum(bf16.model)
    a = measure_hessian(bf16, starter, **settings_)["hessian"]
    b = measure_hessian(rounded, starter, **settings_)["hessian"]
    pd.testing.assert_frame_equal(a, b)
    assert model_checksum(bf16.model) == before and bf16.model.dtype == torch.bfloat16
    assert a["n_tokens"].iloc[0] == 48  # 8 domains x 6 tokens
