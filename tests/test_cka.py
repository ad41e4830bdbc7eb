"""Linear CKA, biased and debiased (atlas.instruments._cka), and per-layer representations."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from scipy.stats import ortho_group

from atlas._anatomy import decoder_layers
from atlas.instruments._cka import cka, cka_test, hsic, layer_cka, layer_representations
from atlas.instruments._symmetry import permute, random_permutation


def _u_statistic(k, l):
    """HSIC_1 written out as the U-statistic of Song et al. (2012): the mean over ordered distinct (i, j, q, r)
    of k_ij l_ij + k_ij l_qr - 2 k_ij l_iq."""
    n = len(k)
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
        count += 1
    return total / count


def _biased_by_hand(x, y):
    """CKA_0 of Kornblith et al. (2019) with K = X Xᵀ, H = I - 11ᵀ/n: tr(KHLH) / sqrt(tr(KHKH) tr(LHLH))."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T
    return np.trace(k @ h @ l @ h) / np.sqrt(np.trace(k @ h @ k @ h) * np.trace(l @ h @ l @ h))


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8))
    return x, x @ rng.normal(size=(8, 5)) + rng.normal(size=(40, 5))  # related, not identical


def test_unbiased_hsic_is_the_u_statistic():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    k, l = x @ x.T, y @ y.T
    assert hsic(k, l) == pytest.approx(_u_statistic(k, l), rel=1e-10, abs=1e-12)
    assert hsic(k, k) == pytest.approx(_u_statistic(k, k), rel=1e-10)


def test_a_small_case_by_hand():
    """n = 4 one-dimensional representations: x = (0, 1, 2, 3), y = (0, 1, 3, 2).

    Biased: centred, x = (-1.5, -0.5, 0.5, 1.5) and y = (-1.5, -0.5, 1.5, 0.5); for d = 1 linear CKA is the
    squared Pearson correlation, (x·y)² / ((x·x)(y·y)) = (2.25 + 0.25 + 0.75 + 0.75)² / 5² = 16/25.
    Debiased: with n = 4 every ordered distinct (i, j, q, r) is one of the 24 orders of (0, 1, 2, 3); the
    U-statistic in exact fractions gives HSIC_1(K, L) = 23/12 and HSIC_1(K, K) = HSIC_1(L, L) = 13/6, so
    CKA_1 = (23/12) / (13/6) = 23/26."""
    x, y = np.array([[0.0], [1], [2], [3]]), np.array([[0.0], [1], [3], [2]])
    assert cka(x, y, debiased=False) == pytest.approx(16 / 25, abs=1e-12)
    assert cka(x, y, debiased=False) == pytest.approx(_biased_by_hand(x - x.mean(), y - y.mean()), abs=1e-12)
    assert cka(x, y) == pytest.approx(23 / 26, abs=1e-12)
    k, l = x @ x.T, y @ y.T  # the unbiased estimator needs no centring: uncentred Gram matrices give the same
    assert hsic(k, l) == pytest.approx(23 / 12, abs=1e-12) and hsic(k, k) == pytest.approx(13 / 6, abs=1e-12)


def test_identical_representations_have_cka_one(xy):
    x, _ = xy
    assert cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert cka(x, x, debiased=False) == pytest.approx(1.0, abs=1e-12)


@hsettings(max_examples=10)
@given(seed=st.integers(0, 2**16), scale=st.floats(1e-3, 1e3), debiased=st.booleans())
def test_invariant_to_orthogonal_transforms_scaling_and_shifts(xy, seed, scale, debiased):
    x, y = xy
    rng = np.random.default_rng(seed)
    q_x, q_y = ortho_group.rvs(x.shape[1], random_state=rng), ortho_group.rvs(y.shape[1], random_state=rng)
    moved = scale * x @ q_x + rng.normal(size=x.shape[1])  # rotated, scaled and shifted
    assert cka(moved, y @ q_y, debiased=debiased) == pytest.approx(cka(x, y, debiased=debiased), rel=1e-9)


def test_not_invariant_to_anisotropic_scaling(xy):
    x, y = xy
    stretched = x * np.array([100.0] + [1.0] * (x.shape[1] - 1))
    assert abs(cka(stretched, y) - cka(x, y)) > 0.05


def test_biased_cka_is_inflated_at_small_n_and_the_debiased_is_not():
    """Independent Gaussian X, Y [20, 50] (more features than inputs), 200 seeded draws: the biased estimator
    sits far above 0 (~0.7), the debiased one scatters around 0 (standard error of the mean ~0.003)."""
    rng = np.random.default_rng(2)
    draws = [(rng.normal(size=(20, 50)), rng.normal(size=(20, 50))) for _ in range(200)]
    biased = np.array([cka(x, y, debiased=False) for x, y in draws])
    debiased = np.array([cka(x, y) for x, y in draws])
    assert biased.mean() > 0.5
    assert abs(debiased.mean()) < 4 * debiased.std(ddof=1) / np.sqrt(len(debiased))  # a z-test at about 4 sigma
    assert abs(debiased.mean()) < 0.02


def test_permutation_null(xy):
    x, y = xy
    value, p = cka_test(x, y, n_permutations=199, seed=0)
    assert value == pytest.approx(cka(x, y)) and p == pytest.approx(1 / 200)  # no permutation reaches the data
    rng = np.random.default_rng(3)
    p_values = [cka_test(rng.normal(size=(30, 4)), rng.normal(size=(30, 4)), n_permutations=99, seed=s)[1]
                for s in range(40)]
    assert 0.3 < np.mean(p_values) < 0.7  # uniform under the null: mean 1/2 (sd of the mean of 40: 0.05)
    assert cka_test(x, y, n_permutations=50, seed=4) == cka_test(x, y, n_permutations=50, seed=4)  # seeded


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same inputs"):
        cka(np.zeros((5, 2)), np.zeros((6, 2)))
    with pytest.raises(ValueError, match="n >= 4"):
        cka(np.eye(3), np.eye(3))
    with pytest.raises(ValueError, match="no variance"):
        cka(np.ones((6, 2)), np.random.default_rng(0).normal(size=(6, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        cka(np.full((6, 2), np.nan), np.ones((6, 2)))


# --- representations of a model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def probe():
    ids = torch.randint(5, 261, (12, 10), generator=torch.Generator().manual_seed(0))  # [n, T]
    mask = torch.ones_like(ids)
    mask[6:, 7:] = 0  # half the sequences right-padded to 7 tokens
    return ids, mask


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_representations_are_the_decoder_layer_outputs(tiny, probe, pooling):
    ids, mask = probe
    reps = layer_representations(tiny.model, ids, mask, pooling=pooling, batch_size=5)
    assert reps.shape == (2, 12, 32)
    outputs = []
    hooks = [layer.register_forward_hook(lambda m, i, o: outputs.append(o[0] if isinstance(o, tuple) else o))
             for layer in decoder_layers(tiny.model)]
    with torch.no_grad():
        tiny.model(input_ids=ids[7:8, :7])  # sequence 7 alone, without its padding
    for h in hooks:
        h.remove()
    for layer, hidden in enumerate(outputs):  # [1, 7, d]
        expected = hidden[0].mean(0) if pooling == "mean" else hidden[0, -1]
        np.testing.assert_allclose(reps[layer, 7], expected.double().numpy(), atol=1e-5)


def test_a_permuted_model_has_the_same_representations_up_to_rotation(tiny_gpt2, probe):
    """Permuting MLP units and heads leaves the residual stream unchanged: CKA 1 at every layer; permuting the
    stream itself is an orthogonal map of it, to which CKA is invariant."""
    ids, mask = probe
    for residual in (False, True):
        permuted = permute(tiny_gpt2.model, random_permutation(tiny_gpt2.model, seed=1, residual=residual))
        table = layer_cka(tiny_gpt2.model, permuted, ids, mask, n_permutations=20)
        assert list(table.columns) == ["layer", "cka", "p_value", "n"]
        np.testing.assert_allclose(table["cka"], 1.0, atol=1e-6)
        assert (table["p_value"] == 1 / 21).all() and (table["n"] == 12).all()


def test_layer_cka_refuses_different_depths(tiny_gpt2, probe):
    from transformers import AutoModelForCausalLM

    config = tiny_gpt2.model.config.__class__(**{**tiny_gpt2.model.config.to_dict(), "n_layer": 3})
    deeper = AutoModelForCausalLM.from_config(config).eval()
    with pytest.raises(ValueError, match="2 and 3 decoder layers"):
        layer_cka(tiny_gpt2.model, deeper, *probe)
