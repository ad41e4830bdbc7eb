"""Order parameters and phase transitions along a training trajectory.

The Framework's *phase transitions* (global geometry): a behavioural order parameter Φ(θ)
jumps at a training time λ* "while L(θ, λ) stays smooth". Grokking (Power et al. 2022,
"Grokking: generalization beyond overfitting on small algorithmic datasets") is the
canonical case: on modular addition the training loss is near zero long before held-out
accuracy snaps from chance to ~1.

**Fourier sparsity of a modular-addition embedding** (Nanda et al. 2023, "Progress measures
for grokking via mechanistic interpretability"). A network that has grokked a + b mod p
computes with cos(2π f a / p) and sin(2π f a / p) for a handful of key frequencies f (five
in their p = 113 model), and its token embedding W_E [p, d] (rows: tokens 0..p-1) is
sparse in the discrete Fourier basis over the token axis. ``fourier_spectrum`` gives each
frequency's share of the embedding's squared norm: with F = DFT over tokens [p, d],

    power(f) = c_f Σ_d |F[f, d]|²,   c_f = 2 for 0 < f < p/2 (f and p − f, i.e. its cos and
                                      sin components together), 1 for f = p/2 (even p),

normalised to sum 1 over f = 1..⌊p/2⌋ (Parseval). The constant component (f = 0, the
mean embedding over tokens) is removed first: it carries no information about which token
it is. ``fourier_sparsity`` is the share held by the k largest frequencies; the default
k = 5 is the number of key frequencies Nanda et al. found. A random embedding gives about
k / ⌊p/2⌋ (≈ 0.1 for p = 97), a grokked one approaches 1.

**Transition step** (``transition``). For checkpoints (steps t_i, order parameter Φ_i,
training loss L_i), the rise of Φ is compared over equal windows of training time: Φ and L
are interpolated linearly onto a grid of steps with spacing w (default: the largest gap
between consecutive checkpoints, so that no window is finer than the data; the grid ends
at the last checkpoint, so regular checkpoints that end the run lie on it). Then

    rise_j        = Φ(g_{j+1}) − Φ(g_j)                    (per window; ``direction="fall"``: −ΔΦ)
    λ*            = midpoint of the window with the largest rise
    median_rise   = median_j |ΔΦ_j|                         (the typical step-to-step change)
    jump_ratio    = max rise / max(median_rise, resolution) (1 for a straight ramp; inf when Φ is
                                                             flat apart from the jump and has no
                                                             resolution; 0 if Φ never rises)
    persistence   = (median of Φ at the checkpoints after the window − Φ(window start)) / max rise
                                                            (in the rise's direction: 1 when Φ stays
                                                             where the jump took it, 0 when it falls
                                                             back; 0 with no checkpoint after it)
    loss_change   = |L(window end) − L(window start)| / (max L − min L)
    local_loss_change = |L(window end) − L(window start)| / max(L(window start), L(window end))

so "Φ jumps while L stays smooth" is the statement "jump_ratio is large, the jump persists
and local_loss_change is small" over the same window. ``resolution`` is the smallest change
Φ can show (1 / n for an accuracy counted over n targets): a quantised Φ that is flat in
most windows has median_rise 0, and without the floor one target flipping would be an
infinite ratio. ``loss_change`` scales by L's range over the run, which the early drop of
training dominates; ``local_loss_change`` by L's own level in the window (a 70% fall is
0.7 there, whatever the run did earlier). Log-spaced early checkpoints would otherwise
dominate a per-interval comparison (their intervals are short); on equal windows a smooth
ramp stays a ramp.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

__all__ = ["Transition", "fourier_sparsity", "fourier_spectrum", "modular_embedding", "transition"]


def modular_embedding(model: nn.Module, p: int) -> np.ndarray:
    """The input-embedding rows of tokens 0..p-1 (the numbers of modular addition): [p, d] float64."""
    weight = model.get_input_embeddings().weight  # [V, d]
    if weight.shape[0] < p:
        raise ValueError(f"the model has {weight.shape[0]} tokens, fewer than p = {p}")
    return weight[:p].detach().double().cpu().numpy()


def fourier_spectrum(embedding: np.ndarray | torch.Tensor) -> np.ndarray:
    """Share of the centred embedding's squared norm at each frequency f = 1..⌊p/2⌋: [⌊p/2⌋], sums to 1.

    ``embedding`` [p, d]: one row per residue 0..p-1, in order."""
    w = np.asarray(embedding.detach().cpu() if isinstance(embedding, torch.Tensor) else embedding, dtype=np.float64)
    if w.ndim != 2 or len(w) < 3 or not np.isfinite(w).all():
        raise ValueError(f"fourier_spectrum needs a finite embedding [p, d] with p >= 3 rows (tokens 0..p-1), "
                         f"not shape {w.shape}")
    p = len(w)
    spectrum = np.fft.rfft(w - w.mean(axis=0), axis=0)  # [p // 2 + 1, d]; row 0 (the mean) is 0 now
    power = (np.abs(spectrum[1:]) ** 2).sum(axis=1)  # [p // 2]
    power[: (p - 1) // 2] *= 2  # f and p - f: the cos and sin of one frequency together
    total = power.sum()
    if total <= 0:
        raise ValueError("the embedding is the same for every token: it has no Fourier spectrum to measure")
    return power / total


def fourier_sparsity(embedding: np.ndarray | torch.Tensor, k: int = 5) -> float:
    """Share of the centred embedding's squared norm in its ``k`` strongest frequencies (Nanda et al. 2023)."""
    spectrum = fourier_spectrum(embedding)
    if not 1 <= k <= len(spectrum):
        raise ValueError(f"k must be between 1 and {len(spectrum)} (the frequencies of p = {len(embedding)})")
    # a share: summed in another order than the normalising total, all frequencies can come to 1 + 1 ulp
    return float(min(1.0, np.sort(spectrum)[::-1][:k].sum()))


@dataclass(frozen=True)
class Transition:
    """Where an order parameter rises fastest, and what the loss does over the same window."""

    step: float  # λ*: midpoint of the window with the largest rise
    window_start: float
    window_end: float
    window: float  # w, the width of every window
    rise: float  # the largest rise of Φ over one window
    median_rise: float  # median |ΔΦ| over all windows
    jump_ratio: float  # rise / max(median_rise, resolution)
    persistence: float  # how much of the rise Φ keeps after the window (median of the later checkpoints)
    loss_change: float  # |ΔL| over the same window, as a share of L's range over the trajectory
    local_loss_change: float  # |ΔL| over the same window, as a share of L's level there


def transition(steps, phi, loss, *, window: float | None = None, direction: Literal["rise", "fall"] = "rise",
               resolution: float = 0.0) -> Transition:
    """λ*, the jump ratio, its persistence and the loss's change over the same window, for a trajectory.

    ``steps`` [m] increasing training steps, ``phi`` [m] the order parameter Φ, ``loss`` [m] the
    training loss; ``direction="fall"`` for an order parameter that drops at the transition
    (the generalisation gap, the weight norm); ``resolution``: the smallest change Φ can show
    (1 / n for an accuracy over n targets; 0 for a continuous Φ), the floor of the median rise."""
    t, phi, loss = (np.asarray(v, dtype=np.float64) for v in (steps, phi, loss))
    if not (t.ndim == 1 and t.shape == phi.shape == loss.shape and len(t) >= 3):
        raise ValueError(f"steps, phi and loss must be 1-D arrays of one length >= 3, not {t.shape}, "
                         f"{phi.shape}, {loss.shape}")
    if not (np.isfinite(t).all() and np.isfinite(phi).all() and np.isfinite(loss).all()):
        raise ValueError("steps, phi and loss must be finite (drop checkpoints with NaN or inf values)")
    if not (np.diff(t) > 0).all():
        raise ValueError("steps must be strictly increasing (sort the trajectory by step, one row per checkpoint)")
    if direction not in ("rise", "fall"):
        raise ValueError(f"direction must be 'rise' or 'fall', not {direction!r}")
    if not (np.isfinite(resolution) and resolution >= 0):
        raise ValueError(f"resolution must be a finite number >= 0 (the smallest change of phi), not {resolution}")
    w = float(np.diff(t).max()) if window is None else float(window)
    n_windows = int(np.floor((t[-1] - t[0]) / w + 1e-9))
    if w <= 0 or n_windows < 2:
        raise ValueError(f"window {w} leaves {n_windows} window(s) between steps {t[0]:g} and {t[-1]:g}: "
                         "need a positive window and at least 2 windows (more checkpoints or a smaller window)")
    grid = t[-1] - w * np.arange(n_windows, -1, -1)  # [n_windows + 1], ends at the last checkpoint
    change = np.diff(np.interp(grid, t, phi))  # [n_windows]
    sign = 1.0 if direction == "rise" else -1.0
    rises = sign * change
    j = int(rises.argmax())
    rise, median = float(rises[j]), float(np.median(np.abs(change)))
    typical = max(median, float(resolution))
    ratio = 0.0 if rise <= 0 else (rise / typical if typical > 0 else float("inf"))
    after = phi[t > grid[j + 1]]
    kept = sign * (np.median(after) - np.interp(grid[j], t, phi)) / rise if rise > 0 and len(after) else 0.0
    loss_at = np.interp(grid[[j, j + 1]], t, loss)
    moved, level, loss_range = abs(loss_at[1] - loss_at[0]), float(np.abs(loss_at).max()), float(np.ptp(loss))
    return Transition(step=float(grid[j] + grid[j + 1]) / 2, window_start=float(grid[j]),
                      window_end=float(grid[j + 1]), window=w, rise=rise, median_rise=median, jump_ratio=ratio,
                      persistence=float(kept), loss_change=float(moved / loss_range) if loss_range > 0 else 0.0,
                      local_loss_change=float(moved / level) if level > 0 else 0.0)
