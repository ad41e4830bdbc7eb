import numpy as np
import pytest
import torch
from _reference import SHORT, dense_hessian
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas import LoadedModel, SettingsError, run_instrument
from atlas._anatomy import attention_params, eager_attention
from atlas._cisp import model_checksum
from atlas._profiles import PROFILES
from atlas._schema import validate_table
from atlas.instruments import INSTRUMENTS
from atlas.instruments.hessian import BlockHessian, hessian_batch, mean_nll, only_block_requires_grad
from atlas.instruments.hessian_coupling import (head_units, layer_hessian_coupling, measure_hessian_coupling,
                                                pair_coupling, probe_norms, probe_rows)
from atlas.models import tiny_model

ALL = 10_000  # max_tokens: every passage of SHORT, untruncated


def _micro(kind: str) -> LoadedModel:
    """A 2-layer model with 4 heads of width 4 (hidden 16), weights of std 0.2: its layer-0 head parameters
    (1072 for GPT-2, 768 for Llama with 2 KV heads) give a Hessian small enough to form."""
    if kind == "gpt2":
        return tiny_model("gpt2", name="micro-gpt2", n_embd=16, n_positions=256, initializer_range=0.2)
    return tiny_model("llama", name="micro-llama", hidden_size=16, intermediate_size=32, max_position_embeddings=256,
                      initializer_range=0.2)


def _hand_owners(lm: LoadedModel) -> dict[str, torch.Tensor]:
    """Layer 0's units written out by hand for the two micro layouts (head width 4)."""
    named = dict(lm.model.named_parameters())
    if "transformer.h.0.attn.c_attn.weight" in named:  # GPT-2: c_attn [16, 48] = q | k | v; c_proj [in 16, out 16]
        w = torch.full((16, 48), -1)
        b = torch.full((48,), -1)
        proj = torch.full((16, 16), -1)
        for h in range(4):
            for start in (0, 16, 32):
                w[:, start + 4 * h: start + 4 * h + 4] = h
                b[start + 4 * h: start + 4 * h + 4] = h
            proj[4 * h: 4 * h + 4, :] = h
        return {"transformer.h.0.attn.c_attn.weight": w, "transformer.h.0.attn.c_attn.bias": b,
                "transformer.h.0.attn.c_proj.weight": proj}
    # Llama, 4 query heads over 2 KV heads: group g = query heads 2g, 2g+1 (rows 8g..8g+7 of q) and KV head g
    q, k, v, o = torch.full((16, 16), -1), torch.full((8, 16), -1), torch.full((8, 16), -1), torch.full((16, 16), -1)
    for g in range(2):
        q[8 * g: 8 * g + 8] = g
        k[4 * g: 4 * g + 4] = g
        v[4 * g: 4 * g + 4] = g
        o[:, 8 * g: 8 * g + 8] = g
    prefix = "model.layers.0.self_attn."
    return {prefix + "q_proj.weight": q, prefix + "k_proj.weight": k, prefix + "v_proj.weight": v,
            prefix + "o_proj.weight": o}


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def micro(request):
    return _micro(request.param)


@pytest.fixture(scope="module")
def dense(micro):
    """(H [n, n] float64, owner [n]): the Hessian of the loss w.r.t. layer 0's head parameters, in the order of
    ``_hand_owners``, by torch.autograd.functional.hessian, written independently of the instrument
    (``_reference.dense_hessian``)."""
    owners = _hand_owners(micro)
    return dense_hessian(micro, list(owners), SHORT), torch.cat([o.reshape(-1) for o in owners.values()])


def _exact(H: np.ndarray, owner: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(‖H_ab‖²_F [U, U], c [U, U]) of a dense H by extracting its blocks."""
    labels = owner.numpy()
    units = range(labels.max() + 1)
    sq = np.array([[(H[np.ix_(labels == a, labels == b)] ** 2).sum() for b in units] for a in units])
    d = np.sqrt(np.diag(sq))
    return sq, np.sqrt(sq) / np.sqrt(np.outer(d, d))


def _matrix_hvp(H: np.ndarray):
    A = torch.tensor(H, dtype=torch.float64)
    return lambda v: A @ v.double()


# --- units -------------------------------------------------------------------------------------

def test_units_are_the_hand_written_slices(micro):
    units = head_units(micro.model, 0)
    hand = _hand_owners(micro)
    named = {id(p): n for n, p in micro.model.named_parameters()}
    assert [named[id(p)] for p in units.params] == list(hand)
    assert torch.equal(units.owner, torch.cat([o.reshape(-1) for o in hand.values()]))
    assert units.n_units == (4 if micro.name == "micro-gpt2" else 2)
    assert units.heads_per_unit == (1 if micro.name == "micro-gpt2" else 2)


def test_units_partition_every_layouts_head_parameters(tiny):
    """Every q/k/v/o element has one owner, units are equal, and the output projection's bias has none."""
    model = tiny.model
    for layer in range(2):
        units = head_units(model, layer)
        assert (units.owner >= 0).all()  # each parameter listed is wholly owned (no partial -1 elements)
        assert len(set(units.n_params())) == 1
        in_units = {id(p) for p in units.params}
        left_out = [p for p in attention_params(model, layer) if id(p) not in in_units]
        assert all(p.dim() == 1 and p.numel() == model.config.hidden_size for p in left_out)  # o bias only
        assert len(left_out) == (0 if tiny.name == "tiny-llama" else 1)
        assert units.owner.numel() + sum(p.numel() for p in left_out) == \
            sum(p.numel() for p in attention_params(model, layer))
    grouped = head_units(model, 0)
    assert (grouped.n_units, grouped.heads_per_unit) == ((2, 2) if tiny.name == "tiny-llama" else (4, 1))


# --- the estimator on matrices -------------------------------------------------------------------

def _blocks(rng, sizes, coupling):
    """A symmetric matrix with diagonal blocks of random symmetric matrices and off-diagonal blocks scaled
    by ``coupling``, and its owner labels."""
    n = sum(sizes)
    A = rng.normal(size=(n, n))
    A = (A + A.T) / 2
    owner = np.repeat(np.arange(len(sizes)), sizes)
    A = np.where(owner[:, None] == owner[None, :], A, coupling * A)
    return A, torch.tensor(owner)


def test_probe_norms_are_the_squared_norms_of_hv_on_each_unit():
    """The same draws written out: probe k of unit b is randn(n) masked to b, taken in order from the generator."""
    A, owner = _blocks(np.random.default_rng(2), [4, 7, 5], 0.5)
    S = probe_norms(_matrix_hvp(A), owner, 3, 3, torch.Generator().manual_seed(5))
    generator, labels = torch.Generator().manual_seed(5), owner.numpy()
    for b in range(3):
        for k in range(3):
            v = torch.randn(16, generator=generator).double().numpy() * (labels == b)
            hv = A @ v
            np.testing.assert_allclose(S[b, k], [(hv[labels == a] ** 2).sum() for a in range(3)], rtol=1e-12)


def test_a_block_diagonal_hessian_has_zero_coupling_exactly():
    A, owner = _blocks(np.random.default_rng(0), [6, 6, 6], 0.0)
    S = probe_norms(_matrix_hvp(A), owner, 3, 3, torch.Generator().manual_seed(0))
    pairs = pair_coupling(probe_rows(0, S, np.full(3, 6), 1, 10))
    assert (pairs["coupling"] == 0).all() and (pairs["stderr"] == 0).all()
    assert layer_hessian_coupling(probe_rows(0, S, np.full(3, 6), 1, 10))["coupling"].item() == 0


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.01, 100))
def test_coupling_is_blind_to_the_losss_scale_and_unbiased_in_the_squared_norms(seed, scale):
    """S estimates ‖H_ab‖²_F without bias: over 400 probes the mean is within 4 standard deviations of the
    mean (Var ‖Mv‖² = 2‖MᵀM‖²_F) of the exact value; scaling H leaves c unchanged (same probes)."""
    rng = np.random.default_rng(seed)
    A, owner = _blocks(rng, [5, 8, 3], rng.uniform(0.05, 1.0))
    probes = 400
    S = probe_norms(_matrix_hvp(A), owner, 3, probes, torch.Generator().manual_seed(seed))
    exact, _ = _exact(A, owner)
    labels = owner.numpy()
    for a in range(3):
        for b in range(3):
            M = A[np.ix_(labels == a, labels == b)]
            sd = np.sqrt(2 * ((M.T @ M) ** 2).sum() / probes)
            assert abs(S[b, :, a].mean() - exact[a, b]) <= 4 * sd
    scaled = probe_norms(_matrix_hvp(scale * A), owner, 3, probes, torch.Generator().manual_seed(seed))
    c, c_scaled = (pair_coupling(probe_rows(0, x, np.array([5, 8, 3]), 1, 10))["coupling"] for x in (S, scaled))
    np.testing.assert_allclose(c, c_scaled, rtol=1e-9)


def test_standard_errors_match_the_spread_over_repeated_probes():
    """The delta-method standard errors (pair and layer mean) against the spread of 200 repetitions with other
    probes, at the quick profile's 2 probes and at 8. The layer's 95% CI covers the exact mean at least 88% of
    the time (measured: 99% at 2 probes, where the t quantile at ~1 degree of freedom per unit is wide, and 93%
    at 8); the estimate's O(1/P) bias stays below a third of its spread."""
    A, owner = _blocks(np.random.default_rng(1), [12, 12, 12], 0.3)
    _, c = _exact(A, owner)
    exact_mean = c[np.triu_indices(3, k=1)].mean()
    for probes in (2, 8):
        pairs, layers = [], []
        for rep in range(200):
            S = probe_norms(_matrix_hvp(A), owner, 3, probes, torch.Generator().manual_seed(rep))
            rows = probe_rows(0, S, np.full(3, 12), 1, 10)
            pairs.append(pair_coupling(rows))
            layers.append(layer_hessian_coupling(rows).iloc[0])
        estimate = np.array([p["coupling"].to_numpy() for p in pairs])  # [reps, pairs]
        stderr = np.array([p["stderr"].to_numpy() for p in pairs])
        np.testing.assert_allclose(np.median(stderr, axis=0), estimate.std(axis=0), rtol=0.3)
        means = np.array([r["coupling"] for r in layers])
        assert np.median([r["stderr"] for r in layers]) == pytest.approx(means.std(), rel=0.3)
        assert abs(means.mean() - exact_mean) < means.std() / 3
        assert np.mean([r["ci_low"] <= exact_mean <= r["ci_high"] for r in layers]) >= 0.88


# --- against the dense Hessian of a micro model ---------------------------------------------------

def test_the_instruments_products_are_the_dense_hessians(micro, dense):
    H, _ = dense
    units = head_units(micro.model, 0)
    ids, mask = hessian_batch(micro, SHORT, ALL)
    model = micro.model
    with eager_attention(model), torch.enable_grad(), only_block_requires_grad(model, units.params):
        hvp = BlockHessian(units.params, mean_nll(model, ids, mask))
        generator = torch.Generator().manual_seed(0)
        for _ in range(3):
            v = torch.randn(hvp.n, generator=generator)
            expected = H @ v.double().numpy()
            np.testing.assert_allclose(hvp(v).double().numpy(), expected, atol=1e-4 * np.abs(expected).max())


def test_many_probes_find_the_dense_coupling_within_one_percent(micro, dense):
    """8000 Gaussian probes per unit on the dense H (drawn as one matrix: the estimator's arithmetic, not
    ``probe_norms``' loop, which is checked on the same draws above): every pair within 1e-2 relative, and
    the reported standard error is below 1/4 of that tolerance, so the agreement is not luck."""
    H, owner = dense
    _, exact = _exact(H, owner)
    labels = owner.numpy()
    n_units, probes = labels.max() + 1, 8000
    rng = np.random.default_rng(0)
    A = H.astype(np.float32)
    S = np.empty((n_units, probes, n_units))
    for b in range(n_units):
        V = rng.standard_normal((probes, len(labels)), dtype=np.float32) * (labels == b)  # [P, n]
        W = (V @ A).astype(np.float64) ** 2  # [P, n]: (H v)² per element (H symmetric)
        S[b] = np.stack([W[:, labels == a].sum(axis=1) for a in range(n_units)], axis=1)
    pairs = pair_coupling(probe_rows(0, S, np.bincount(labels), 1, 10))
    assert len(pairs) == n_units * (n_units - 1) // 2
    for row in pairs.itertuples():
        assert row.coupling == pytest.approx(exact[row.unit_a, row.unit_b], rel=1e-2)
        assert row.stderr < 2.5e-3 * row.coupling
    assert exact[np.triu_indices(n_units, k=1)].min() > 1e-3  # the heads are coupled: a relative test has teeth


def test_the_instrument_on_a_micro_model_agrees_with_the_dense_coupling(micro, dense):
    H, owner = dense
    _, exact = _exact(H, owner)
    raw = measure_hessian_coupling(micro, SHORT, layers="0", probes=32, max_tokens=ALL,
                                   progress=False)["hessian_coupling_probes"]
    pairs = pair_coupling(raw)
    for row in pairs.itertuples():
        assert abs(row.coupling - exact[row.unit_a, row.unit_b]) <= 4 * row.stderr
        assert row.stderr <= 0.2 * row.coupling
        assert row.n_probes == 32
    layer = layer_hessian_coupling(raw).iloc[0]
    exact_mean = exact[np.triu_indices(len(exact), k=1)].mean()
    assert layer["ci_low"] <= exact_mean <= layer["ci_high"] and layer["n_pairs"] == len(pairs)


# --- through CISP --------------------------------------------------------------------------------

def test_every_layout_through_cisp(tiny, store):
    before = model_checksum(tiny.model)
    result = run_instrument(store, tiny, SHORT, "hessian_coupling", progress=False, probes=3, max_tokens=ALL)
    assert model_checksum(tiny.model) == before
    raw, pairs, layers = (result.tables[t] for t in INSTRUMENTS["hessian_coupling"].tables)
    for table, frame in result.tables.items():
        validate_table(table, frame)
    n_units = 2 if tiny.name == "tiny-llama" else 4
    assert len(raw) == 2 * n_units * 3 * n_units
    assert len(pairs) == 2 * n_units * (n_units - 1) // 2 and list(layers["layer"]) == [0, 1]
    assert (pairs["coupling"] > 0).all() and np.isfinite(pairs.select_dtypes("number")).all().all()
    np.testing.assert_allclose(layers["coupling"], pairs.groupby("layer")["coupling"].mean())
    again = run_instrument(store, tiny, SHORT, "hessian_coupling", progress=False, probes=3, max_tokens=ALL)
    assert again.reused


def test_a_layer_gets_the_same_probes_whichever_layers_are_selected(tiny_gpt2):
    both = measure_hessian_coupling(tiny_gpt2, SHORT, probes=2, max_tokens=16,
                                    progress=False)["hessian_coupling_probes"]
    one = measure_hessian_coupling(tiny_gpt2, SHORT, layers="1", probes=2, max_tokens=16,
                                   progress=False)["hessian_coupling_probes"]
    np.testing.assert_array_equal(both[both["layer"] == 1]["sq_norm"].to_numpy(), one["sq_norm"].to_numpy())
    assert set(one["layer"]) == {1}


def test_model_is_left_as_found():
    lm = _micro("gpt2")
    model = lm.model
    frozen = model.transformer.wpe.weight
    before = model_checksum(model)
    model.set_attn_implementation("sdpa")
    frozen.requires_grad_(False)
    model.train()
    measure_hessian_coupling(lm, SHORT, probes=2, max_tokens=16, progress=False)
    assert model.config._attn_implementation == "sdpa" and model.training
    assert not frozen.requires_grad and all(p.requires_grad for p in model.parameters() if p is not frozen)
    assert all(p.grad is None for p in model.parameters())
    assert model_checksum(model) == before


@pytest.mark.parametrize("settings_, message", [
    ({"probes": 1}, "probes must be at least 2"),
    ({"max_tokens": 0}, "max_tokens must be at least 1"),
    ({"layers": "0,7"}, r"layers \[7\] out of range"),
    ({"layers": "first"}, "comma list"),
])
def test_bad_settings_are_one_clear_error(tiny_gpt2, store, settings_, message):
    with pytest.raises(SettingsError, match=message):
        run_instrument(store, tiny_gpt2, SHORT, "hessian_coupling", progress=False, **settings_)


@pytest.mark.slow
def test_smollm2_last_layer_with_a_tiny_budget(smollm2, shared_corpus, store):
    """The last layer (the shortest double backward) on 32 tokens: 3 KV groups of 3 query heads, 3 pairs."""
    result = run_instrument(store, smollm2, shared_corpus, "hessian_coupling", progress=False, layers="29",
                            probes=2, max_tokens=32)
    pairs, layers = result.tables["hessian_coupling"], result.tables["hessian_coupling_layers"]
    assert len(pairs) == 3 and (pairs["heads_per_unit"] == 3).all() and (pairs["coupling"] > 0).all()
    assert layers["layer"].tolist() == [29] and layers["n_tokens"].item() == 32


def test_profiles_name_real_settings_and_the_quick_one_keeps_every_layer():
    for profile in PROFILES.values():
        chosen = profile.settings["hessian_coupling"]
        assert set(chosen) <= set(INSTRUMENTS["hessian_coupling"].defaults) and chosen["probes"] >= 2
        assert chosen.get("layers", "all") == "all"  # P6 correlates the coupling layer by layer
