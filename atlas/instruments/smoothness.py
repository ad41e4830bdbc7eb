"""Smoothness: how noisy and how conflicting the gradients of one domain's passages are, per layer.

The Framework's *smooth / abrasive* (terrain): "signal degradation between gradient
computation and weight update. Smooth means clean gradient transmission. Abrasive
means conflicting or noisy gradients opposing movement" (Kingma & Ba 2014, whose
Adam divides each step by the gradient's running second moment, i.e. by its noise).
Operationalised here, per domain and per block (``model`` and each decoder layer,
``atlas.instruments._pergrad``), on the per-passage gradients g_1..g_n of a domain
(g_i: gradient of passage i's mean NLL per token):

    signal       |G|^2, G the domain's true gradient, estimated without bias by the
                 mean inner product of distinct passages, mean_{i != j} <g_i, g_j>
                 (McCandlish et al. 2018, appendix A, with B_small = 1 and
                 B_big = n: (n |G_n|^2 - mean_i |g_i|^2) / (n - 1), the same number);
                 negative when the passages' gradients disagree on average
    noise        tr(Sigma), the per-passage covariance's trace, unbiased:
                 sum_i |g_i - G_n|^2 / (n - 1) = mean_i |g_i|^2 - signal
    b_simple     the simple gradient noise scale B_simple = tr(Sigma) / |G|^2
                 (McCandlish et al. 2018): the batch size (in passages) above which
                 larger batches stop paying off. Large = abrasive, small = smooth.
                 Undefined (null) when signal <= 0: noise swamps the common direction
    mean_cosine  the mean cosine between distinct passages' gradients: 1 = every
                 passage pushes the same way (smooth), 0 = unrelated, < 0 = conflicting

High b_simple and low mean_cosine both read *abrasive*; the cosine ignores how large
each passage's gradient is, b_simple weighs large gradients more.

Method. One forward and backward per passage (``_pergrad.passage_gradients``); a
domain's n gradients are held in half precision (n x 2 bytes per parameter, one domain
at a time) and reduced to their Gram matrix K_ij = <g_i, g_j> per block
(``_pergrad.HalfStore``: squared norms exact, products of distinct passages exact up to
the storage's rounding, less than 2e-4 of |g_i||g_j|). No sketch or projection is needed: every
statistic above is a function of K. Table ``smoothness_gram`` holds K (pairs a <= b,
the diagonal |g_i|^2 included); the summary ``smoothness`` (``domain_smoothness``)
computes the statistics from it with 95% bootstrap CIs over passages (BCa, ``atlas._stats``).

Bootstrap. A resample draws n passages with replacement; each statistic becomes the
same mean over pairs of *distinct* passages weighted by how often each was drawn
(c_i c_j), since a passage paired with its own copy would count as perfect agreement:
signal fraction phi = sum c_i c_j K_ij / sum c_i c_j (K_ii + K_jj) / 2 (in [-1, 1];
the observed phi is signal / mean_i |g_i|^2) and the weighted mean cosine. B_simple =
1/phi - 1 falls as phi rises, so its interval is [1/phi_high - 1, 1/phi_low - 1]; an
end is null where phi's end is <= 0 (unbounded: no positive signal at that end).
Resamples that drew a single passage have no pair; where they leave the BCa interval
undefined, it is the percentile interval of the others (``atlas._stats.bootstrap_ci``).

Cost (SmolLM2-135M, quick profile: 8 passages per domain, 64 tokens, through CISP):
114 CPU seconds on one thread of this project's 2-core machine under a load of 7-8,
469 s wall; about 25 s wall on the idle machine, scaled by a 256-token forward pass
(0.3 s idle, 1.45 CPU s under that load). Memory: n x 2 bytes per parameter on top of
the model (2.2 GB at n = 8).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pandas as pd

from .._bounds import at_least
from .._corpus import Corpus
from .._errors import SettingsError
from .._models import LoadedModel
from .._stats import bootstrap_ci
from .._progress import progress_bar
from ._pergrad import HalfStore, block_names, domain_passages, parameters, passage_gradients
from ._registry import instrument

__all__ = ["domain_smoothness", "measure_smoothness", "pair_statistics"]

_COLUMNS = ["domain", "block", "n_passages", "grad_sq_norm", "signal", "noise", "b_simple", "b_simple_ci_low",
            "b_simple_ci_high", "mean_cosine", "cosine_ci_low", "cosine_ci_high"]


def pair_statistics(gram: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signal fraction phi and mean cosine over pairs of distinct passages, weighted by c_i c_j.

    gram: [n, n]; counts: [..., n] (how often each passage was drawn; all ones for the
    sample itself)  ->  phi [...], mean_cosine [...]; NaN where no pair of distinct passages was drawn.
    """
    norm_sq = np.diag(gram)  # [n]
    cosine = gram / np.sqrt(np.outer(norm_sq, norm_sq))  # [n, n], diagonal 1
    c = counts.astype(float)
    c2 = c * c
    pairs = c.sum(-1) ** 2 - c2.sum(-1)  # [...]: sum_{i != j} c_i c_j
    dots = np.einsum("...i,ij,...j->...", c, gram, c) - c2 @ norm_sq
    halves = (c * (c.sum(-1, keepdims=True) - c)) @ norm_sq  # sum_{i != j} c_i c_j (K_ii + K_jj) / 2
    cosines = np.einsum("...i,ij,...j->...", c, cosine, c) - c2.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, dots / halves, np.nan), np.where(pairs > 0, cosines / pairs, np.nan)


def _noise_scale(phi: float) -> float:
    """B_simple = tr(Sigma) / |G|^2 = 1/phi - 1 from the signal fraction; NaN (unbounded) where phi <= 0."""
    return 1.0 / phi - 1.0 if phi > 0 else float("nan")


def domain_smoothness(gram: pd.DataFrame, *, n_resamples: int, seed: int = 0) -> pd.DataFrame:
    """Per domain and block: signal, noise, B_simple and mean cosine with bootstrap CIs (schema ``smoothness``)."""
    rows = []
    for (domain, block), g in gram.groupby(["domain", "block"], sort=False):
        ids = list(dict.fromkeys([*g["passage_a"], *g["passage_b"]]))
        at = {pid: k for k, pid in enumerate(ids)}
        a, b = g["passage_a"].map(at).to_numpy(), g["passage_b"].map(at).to_numpy()
        k = np.zeros((len(ids), len(ids)))
        k[a, b] = k[b, a] = g["dot"].to_numpy(float)
        # Cauchy-Schwarz, |K_ij| <= sqrt(K_ii K_jj): the half-precision dots of near-identical gradients can round
        # past it (a cosine above 1, noise below 0); clipped, the noise tr(Sigma) stays >= 0 (AM-GM)
        bound = np.sqrt(np.outer(np.diag(k), np.diag(k)))
        k = np.clip(k, -bound, bound)
        n = len(ids)
        signal = float((k.sum() - np.trace(k)) / (n * (n - 1)))
        grad_sq_norm = float(np.trace(k) / n)

        def resampled(which: int):
            def statistic(idx, axis=-1):
                counts = (np.expand_dims(idx, -1) == np.arange(n)).sum(-2)  # [..., n]
                return pair_statistics(k, counts)[which]
            return statistic

        ci = [bootstrap_ci((np.arange(n),), resampled(which), paired=False, n_resamples=n_resamples, seed=seed,
                           vectorized=True) for which in (0, 1)]
        (phi_low, phi_high), cosine_ci = ci
        _, cosine = pair_statistics(k, np.ones(n))
        rows.append({"domain": domain, "block": block, "n_passages": n, "grad_sq_norm": grad_sq_norm,
                     "signal": signal, "noise": grad_sq_norm - signal,
                     "b_simple": (grad_sq_norm - signal) / signal if signal > 0 else float("nan"),
                     "b_simple_ci_low": _noise_scale(phi_high), "b_simple_ci_high": _noise_scale(phi_low),
                     "mean_cosine": float(cosine), "cosine_ci_low": cosine_ci[0], "cosine_ci_high": cosine_ci[1]})
    return pd.DataFrame(rows, columns=_COLUMNS)


@instrument("smoothness", version="2", measures=("smoothness_gram",), summaries={"smoothness": domain_smoothness},
            terms=("smooth_abrasive",))
def measure_smoothness(lm: LoadedModel, corpus: Corpus, *, max_tokens: Annotated[int, at_least(1)] = 128,
                       progress: bool = True) -> dict[str, pd.DataFrame]:
    """Per domain and block, the Gram matrix of the passages' gradients (schema ``smoothness_gram``).

    Settings:
        max_tokens: scored tokens per passage (the rest of a longer passage is cut off)
    """
    groups = domain_passages(lm, corpus, max_tokens)
    if single := [domain for domain, passages, _ in groups if len(passages) < 2]:
        raise SettingsError(f"smoothness compares passages within a domain and needs at least two per domain; "
                         f"{', '.join(single)} {'has' if len(single) == 1 else 'have'} one: add passages or "
                         "leave the domain out of the corpus")
    params, layer = parameters(lm.model)
    names = block_names(lm.n_layers)
    store = HalfStore(params, layer, capacity=max(len(passages) for _, passages, _ in groups))
    tables = []
    with progress_bar(total=len(corpus.passages), desc=f"smoothness {lm.name}", unit="passages",
                      enabled=progress) as bar:
        for domain, passages, encoded in groups:
            store.clear()
            for g in passage_gradients(lm, encoded, params):
                store.add(g)
                bar.update()
            gram = store.gram(lm.n_layers)  # [1 + L, n, n]
            a, b = np.triu_indices(len(passages))
            ids = np.array([p.id for p in passages], dtype=object)
            tables += [pd.DataFrame({"domain": domain, "block": name, "passage_a": ids[a], "passage_b": ids[b],
                                     "dot": k[a, b]}) for name, k in zip(names, gram)]
    return {"smoothness_gram": pd.concat(tables, ignore_index=True)}
