"""Representation similarity by linear CKA, debiased, with a permutation null (algorithmic branches).

The Framework's *algorithmic branches*: two solutions at the same loss may compute
differently, and their internal representations show it. Centred kernel alignment
(Kornblith et al. 2019, "Similarity of neural network representations revisited")
compares two representations of the same n inputs, X [n, d1] and Y [n, d2], through
their Gram matrices K = X Xᵀ and L = Y Yᵀ (linear kernel, features centred first):

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L))

It is invariant to orthogonal transforms and isotropic scaling of either representation
(K and L change by a factor that cancels), not to arbitrary invertible linear maps.

Two estimators of HSIC (Gretton et al. 2005; Song et al. 2012):

* biased:    HSIC_0(K, L) = tr(K H L H) / (n − 1)²,  H = I − 11ᵀ/n;
* unbiased:
      HSIC_1(K, L) = [tr(K̃ L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n − 1)(n − 2)) − 2/(n − 2) · 1ᵀK̃L̃1] / (n(n − 3)),
  K̃, L̃ = K, L with their diagonals set to 0 (Song et al. 2012, "Feature selection via dependence
  maximization"; needs n ≥ 4). It is the
  U-statistic  1/(n)₄ Σ_{i,j,q,r distinct} [k_ij l_ij + k_ij l_qr − 2 k_ij l_iq].

The biased estimator is inflated at small n: its diagonal terms k_ii l_ii (products of
squared norms) add about tr(Σ_X) tr(Σ_Y) / n even when X and Y are independent, which
dominates when the number of features is comparable to n or larger. Debiased
CKA (HSIC_1 throughout) removes that bias (Nguyen et al. 2021, "Do wide and deep networks
learn the same things?"; Davari et al. 2022, "Reliability of CKA as a similarity measure in
deep learning"); it can be slightly negative for unrelated representations.

Null hypothesis (no relation between the rows of X and Y): ``cka_test`` permutes the rows
of Y (``scipy.stats.permutation_test``, pairings, seeded) and reports the share of
permutations with CKA ≥ the observed value (one-sided, with the +1 correction).

Representations (``layer_representations``): the residual stream after each decoder layer
(the output of ``atlas._anatomy.decoder_layers(model)[l]``, before any final norm), one
vector per sequence: ``pooling="mean"`` averages over the sequence's tokens (attention mask
1), ``"last"`` takes its last token (where a causal model reads out its prediction, e.g. the
``=`` of modular addition). Sequences are padded on the right.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
from scipy.stats import permutation_test
from torch import nn

from .._anatomy import decoder_layers, hooks

__all__ = ["cka", "cka_test", "hsic", "layer_cka", "layer_representations"]

Pooling = Literal["mean", "last"]


def hsic(k: np.ndarray, l: np.ndarray, *, debiased: bool = True) -> float:
    """HSIC of two Gram matrices [n, n]: unbiased (Song et al. 2012) or biased (Gretton et al. 2005)."""
    prepare, estimate = _ESTIMATORS[debiased]
    return estimate(prepare(k), prepare(l))


def cka(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, *, debiased: bool = True) -> float:
    """Linear CKA between X [n, d1] and Y [n, d2] (rows: the same n inputs), debiased by default."""
    k, l = _grams(x, y, debiased)
    return hsic(k, l, debiased=debiased) / _norm(k, l, debiased)


def cka_test(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, *, debiased: bool = True,
             n_permutations: int = 999, seed: int = 0) -> tuple[float, float]:
    """(CKA, p-value) with the null of no relation: rows of Y permuted ``n_permutations`` times."""
    if n_permutations < 1:
        raise ValueError("n_permutations must be at least 1 (the p-value's resolution is 1/(n_permutations + 1))")
    k, l = _grams(x, y, debiased)
    norm = _norm(k, l, debiased)  # HSIC(L, L) does not change when the rows of Y are permuted
    prepare, estimate = _ESTIMATORS[debiased]
    k, l = prepare(k), prepare(l)  # both preparations commute with permuting rows and columns together

    def statistic(order):  # order [n]: a permutation of the rows of Y
        return estimate(k, l[np.ix_(order, order)]) / norm

    result = permutation_test((np.arange(len(k)),), statistic, permutation_type="pairings", vectorized=False,
                              n_resamples=n_permutations, alternative="greater", rng=seed)
    return float(result.statistic), float(result.pvalue)


def layer_representations(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          *, pooling: Pooling = "mean", batch_size: int = 32) -> np.ndarray:
    """The residual stream after each decoder layer, pooled per sequence: [n_layers, n, d_model] float64.

    ``input_ids`` [n, T] (right-padded; ``attention_mask`` [n, T], 1 on real tokens, default all 1).
    The model is run as it is (eval mode expected) under ``torch.no_grad``; it is not changed."""
    if pooling not in ("mean", "last"):
        raise ValueError(f"pooling must be 'mean' or 'last', not {pooling!r}")
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    if input_ids.ndim != 2 or mask.shape != input_ids.shape or bool((mask.sum(dim=1) == 0).any()):
        raise ValueError("input_ids must be [n, T] with an attention_mask of the same shape and at least one real "
                         "token per sequence")
    layers = decoder_layers(model)
    captured: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        captured.append(output[0] if isinstance(output, tuple) else output)  # [b, T, d]

    pooled = []
    device = next(model.parameters()).device
    with hooks(*[(layer, "forward", keep) for layer in layers]), torch.no_grad():
        for start in range(0, len(input_ids), batch_size):
            ids, m = input_ids[start:start + batch_size].to(device), mask[start:start + batch_size].to(device)
            captured.clear()
            model.base_model(input_ids=ids, attention_mask=m)  # the decoder alone: no logits needed
            hidden = torch.stack(captured).double()  # [L, b, T, d]
            if pooling == "mean":
                w = m.double()[None, :, :, None]  # [1, b, T, 1]
                pooled.append((hidden * w).sum(dim=2) / w.sum(dim=2))  # [L, b, d]
            else:
                last = m.sum(dim=1) - 1  # [b] right padding: the last real token
                pooled.append(hidden[:, torch.arange(len(ids)), last])  # [L, b, d]
    return torch.cat(pooled, dim=1).cpu().numpy()


def layer_cka(model_a: nn.Module, model_b: nn.Module, input_ids: torch.Tensor,
              attention_mask: torch.Tensor | None = None, *, pooling: Pooling = "mean", debiased: bool = True,
              n_permutations: int = 999, seed: int = 0) -> pd.DataFrame:
    """CKA between the two models' representations of the same probe set, layer by layer.

    One row per decoder layer: layer, cka, p_value (``cka_test``), n (sequences). The models may
    differ in width but must have the same number of layers."""
    reps_a = layer_representations(model_a, input_ids, attention_mask, pooling=pooling)  # [L, n, d_a]
    reps_b = layer_representations(model_b, input_ids, attention_mask, pooling=pooling)  # [L, n, d_b]
    if len(reps_a) != len(reps_b):
        raise ValueError(f"layer_cka pairs layers one to one: the models have {len(reps_a)} and {len(reps_b)} "
                         "decoder layers (compare checkpoints or seeds of one architecture)")
    rows = []
    for layer, (x, y) in enumerate(zip(reps_a, reps_b)):
        value, p = cka_test(x, y, debiased=debiased, n_permutations=n_permutations, seed=seed)
        rows.append({"layer": layer, "cka": value, "p_value": p, "n": len(x)})
    return pd.DataFrame(rows)


def _grams(x, y, debiased: bool) -> tuple[np.ndarray, np.ndarray]:
    """Gram matrices [n, n] of the column-centred representations, in float64, with the inputs checked."""
    x, y = (np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64) for v in (x, y))
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"CKA compares two representations of the same inputs: X [n, d1] and Y [n, d2], "
                         f"not {x.shape} and {y.shape}")
    if len(x) < (4 if debiased else 2):
        raise ValueError(f"{len(x)} inputs: debiased CKA needs n >= 4 (the unbiased HSIC divides by n(n-3)), "
                         "the biased one n >= 2")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("CKA got non-finite representations (NaN or inf)")
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    return x @ x.T, y @ y.T


def _zero_diagonal(k: np.ndarray) -> np.ndarray:
    k = k.copy()
    np.fill_diagonal(k, 0.0)
    return k


def _double_centre(k: np.ndarray) -> np.ndarray:
    """H K H without the products: rows and columns centred."""
    k = k - k.mean(axis=0, keepdims=True)
    return k - k.mean(axis=1, keepdims=True)


def _unbiased(kt: np.ndarray, lt: np.ndarray) -> float:
    """HSIC_1 from zero-diagonal Gram matrices K̃, L̃ [n, n] (Song et al. 2012)."""
    n = len(kt)
    k_sum, l_sum = kt.sum(axis=0), lt.sum(axis=0)  # [n] (symmetric: row sums = column sums)
    value = (kt * lt).sum() + k_sum.sum() * l_sum.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (k_sum @ l_sum)
    return float(value) / (n * (n - 3))


def _biased(kc: np.ndarray, lc: np.ndarray) -> float:
    """HSIC_0 = tr(K H L H) / (n - 1)^2 = Σ (HKH) ∘ (HLH) / (n - 1)^2 from double-centred Gram matrices."""
    return float((kc * lc).sum()) / (len(kc) - 1) ** 2


_ESTIMATORS = {True: (_zero_diagonal, _unbiased), False: (_double_centre, _biased)}  # debiased -> (prepare, estimate)


def _norm(k: np.ndarray, l: np.ndarray, debiased: bool) -> float:
    """sqrt(HSIC(K, K) · HSIC(L, L)), the denominator of CKA."""
    kk, ll = hsic(k, k, debiased=debiased), hsic(l, l, debiased=debiased)
    if kk <= 0 or ll <= 0:
        raise ValueError("CKA is undefined here: a representation has no variance across the inputs "
                         "(HSIC(K, K) <= 0); use more, or more varied, probe inputs")
    return float(np.sqrt(kk * ll))
