"""Order parameters and transitions (atlas.instruments._order)."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from atlas.instruments._order import fourier_sparsity, fourier_spectrum, modular_embedding, transition

P = 97


def _waves(frequencies, d=16, seed=0, p=P):
    """An embedding [p, d] built from cos and sin of the given frequencies with random coefficients and phases."""
    rng = np.random.default_rng(seed)
    a = np.arange(p)[:, None]
    w = np.zeros((p, d))
    for f in frequencies:
        w += np.cos(2 * np.pi * f * a / p + rng.uniform(0, 2 * np.pi, d)) * rng.normal(size=d)
    return w


def test_an_embedding_of_k_frequencies_is_fully_sparse_at_k():
    w = _waves([3, 14, 35, 41, 47])
    assert fourier_sparsity(w, k=5) == pytest.approx(1.0, abs=1e-12)
    assert fourier_sparsity(w, k=4) < 0.95
    spectrum = fourier_spectrum(w)
    assert spectrum.shape == (48,) and spectrum.sum() == pytest.approx(1.0, abs=1e-12)
    assert set(np.flatnonzero(spectrum > 1e-12) + 1) == {3, 14, 35, 41, 47}  # index f - 1 holds frequency f


@hsettings(max_examples=10)
@given(f=st.integers(1, P - 1), phase=st.floats(0, 2 * np.pi), shift=st.floats(-10, 10))
def test_cos_and_sin_of_one_frequency_count_together(f, phase, shift):
    """cos(2πfa/p + φ) for any phase is one frequency (f and p - f are the same one); the mean is ignored."""
    a = np.arange(P)
    w = np.stack([np.cos(2 * np.pi * f * a / P + phase), np.sin(2 * np.pi * f * a / P)], axis=1) + shift
    assert fourier_sparsity(w, k=1) == pytest.approx(1.0, abs=1e-9)
    assert fourier_spectrum(w).argmax() + 1 == min(f, P - f)


@hsettings(max_examples=50)
@given(seed=st.integers(0, 2**32 - 1), p=st.integers(3, 20))
def test_the_sparsity_is_a_share_even_at_every_frequency(seed, p):
    """At k = every frequency the sparsity is the whole, 1, never 1 + an ulp (the schema's bound: the table of a run
    whose shares summed to 1.0000000000000002 was refused)."""
    w = np.random.default_rng(seed).normal(size=(p, 8))
    assert 0.0 <= fourier_sparsity(w, k=p // 2) <= 1.0
    assert fourier_sparsity(np.random.default_rng(3).normal(size=(16, 8)), k=8) == 1.0  # summed, 1 + 1 ulp


def test_even_p_counts_the_nyquist_frequency_once():
    p = 8
    a = np.arange(p)[:, None]
    w = np.hstack([np.cos(np.pi * a), np.cos(2 * np.pi * a / p)])  # f = 4: (-1)^a, squared norm 8; f = 1: norm² 4
    spectrum = fourier_spectrum(w)
    assert spectrum.shape == (4,)
    np.testing.assert_allclose(spectrum, [4 / 12, 0, 0, 8 / 12], atol=1e-12)


def test_a_random_embedding_is_not_sparse():
    w = np.random.default_rng(0).normal(size=(P, 128))
    assert 5 / 48 < fourier_sparsity(w) < 0.2  # the five largest of 48 near-equal shares: a little above 5/48


def test_modular_embedding_reads_the_first_p_token_rows(tiny_gpt2):
    w = modular_embedding(tiny_gpt2.model, P)
    np.testing.assert_array_equal(w, tiny_gpt2.model.transformer.wte.weight[:P].detach().double().numpy())
    with pytest.raises(ValueError, match="fewer than p"):
        modular_embedding(tiny_gpt2.model, 1000)


def test_bad_embeddings_are_refused():
    with pytest.raises(ValueError, match=r"\[p, d\]"):
        fourier_spectrum(np.zeros(10))
    with pytest.raises(ValueError, match="same for every token"):
        fourier_spectrum(np.ones((10, 3)))
    with pytest.raises(ValueError, match="k must be between 1 and 48"):
        fourier_sparsity(_waves([1]), k=49)
    assert fourier_sparsity(torch.tensor(_waves([2])), k=1) == pytest.approx(1.0)  # tensors are accepted


# --- transitions -------------------------------------------------------------------------------

STEPS = np.arange(0, 10_001, 100.0)  # [101] regular checkpoints


def _sigmoid(t, at, width):
    return 1 / (1 + np.exp(-(t - at) / width))


def _log_and_regular(end=10_000, every=1_000):
    """Checkpoints as a trainer writes them: log-spaced early (20 of them), then regular (every 1000 steps)."""
    return np.unique(np.concatenate([[0], np.geomspace(1, every, 20).round(), np.arange(every, end + 1, every)]))


def test_a_sigmoid_jump_is_found_at_its_step_while_a_smooth_loss_is_smooth():
    phi = 0.01 + 0.98 * _sigmoid(STEPS, 6_000, 80)
    loss = 4.6 * np.exp(-STEPS / 1_500)  # memorised early, smooth through the jump
    found = transition(STEPS, phi, loss)
    assert found.window == 100 and abs(found.step - 6_000) <= 50
    assert found.jump_ratio > 100 and found.rise > 0.2
    assert found.loss_change < 0.01  # e^{-4} / 15 ≈ 0.1% of the loss's range over the window


def test_a_smooth_ramp_is_not_a_jump():
    phi = STEPS / STEPS[-1]
    found = transition(STEPS, phi, 1 - phi)
    assert found.jump_ratio == pytest.approx(1.0, rel=1e-9)
    assert found.loss_change == pytest.approx(0.01, rel=1e-9)  # a ramp loss moves 1 / 100 of its range per window


def test_on_log_spaced_checkpoints_a_ramp_stays_a_ramp_and_a_jump_a_jump():
    steps = _log_and_regular()
    ramp = transition(steps, steps / steps[-1], -steps)
    assert ramp.window == 1_000 and ramp.jump_ratio == pytest.approx(1.0, rel=1e-9)
    per_interval = np.diff(steps / steps[-1])  # what a per-checkpoint comparison would have seen: short log intervals
    assert per_interval.max() / np.median(per_interval) > 10
    jump = transition(steps, _sigmoid(steps, 7_000, 150), np.exp(-steps / 1_000))
    assert abs(jump.step - 7_000) <= 500 and jump.jump_ratio > 10


def test_a_loss_that_jumps_with_phi_is_reported():
    phi = _sigmoid(STEPS, 5_000, 80)
    found = transition(STEPS, phi, 2 - phi)
    assert found.loss_change == pytest.approx(found.rise / np.ptp(phi))  # the same share of its range as phi's rise
    assert found.loss_change > 0.25


def test_a_falling_order_parameter():
    gap = 0.95 - 0.9 * _sigmoid(STEPS, 3_000, 80)  # the generalisation gap closes
    assert abs(transition(STEPS, gap, STEPS * 0, direction="fall").step - 3_000) <= 50
    assert transition(STEPS, gap, STEPS * 0).jump_ratio == 0.0  # it never rises
    assert transition(STEPS, gap, STEPS * 0).loss_change == 0.0  # a constant loss does not change


def test_a_flat_parameter_with_one_jump_has_an_infinite_ratio():
    phi = (STEPS >= 4_000).astype(float)
    found = transition(STEPS, phi, -STEPS)
    assert found.jump_ratio == float("inf") and found.step == 3_950 and found.median_rise == 0.0


def test_bad_trajectories_are_refused():
    with pytest.raises(ValueError, match="one length"):
        transition([0, 1, 2], [0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="strictly increasing"):
        transition([0, 2, 1], [0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match="finite"):
        transition([0, 1, 2], [0, np.nan, 2], [0, 1, 2])
    with pytest.raises(ValueError, match="at least 2 windows"):
        transition([0, 1, 2], [0, 1, 2], [0, 1, 2], window=5)
    with pytest.raises(ValueError, match="direction"):
        transition([0, 1, 2], [0, 1, 2], [0, 1, 2], direction="up")
