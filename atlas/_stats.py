"""Statistics used by instruments and predictions: thin wrappers over scipy.stats."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

__all__ = ["bootstrap_ci", "domain_bootstrap_ci", "spearman"]


def bootstrap_ci(
    samples: Sequence[np.ndarray],
    statistic: Callable[..., float],
    *,
    paired: bool,
    n_resamples: int,
    seed: int = 0,
    confidence: float = 0.95,
    vectorized: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``statistic(*samples)`` (scipy.stats.bootstrap).

    ``paired=True`` resamples the same indices in every sample (e.g. a passage's
    NLL together with its token count); ``paired=False`` resamples each sample on
    its own (e.g. passages within each domain). Returns (nan, nan) when a sample
    has fewer than two observations: no interval can be estimated.

    ``vectorized=True``: ``statistic(*resampled, axis=-1)`` takes a whole batch of
    resamples at once (scipy's convention), for statistics too costly to call once
    per resample. It may return NaN for a resample where it is undefined (e.g. a
    statistic of pairs of distinct passages on a resample that drew one passage
    only): those resamples are left out, and the interval is the percentiles of
    the defined ones.
    """
    if min(len(s) for s in samples) < 2:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        # scipy warns when NaN resamples make its own percentiles NaN; they are recomputed below
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(
            tuple(np.asarray(s) for s in samples),
            statistic,
            paired=paired,
            vectorized=vectorized,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    low, high = res.confidence_interval.low, res.confidence_interval.high
    if vectorized and np.isnan([low, high]).any() and not np.isnan(res.bootstrap_distribution).all():
        tail = (1 - confidence) / 2 * 100
        low, high = np.nanpercentile(res.bootstrap_distribution, [tail, 100 - tail])
    return float(low), float(high)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (scipy.stats.spearmanr)."""
    return float(stats.spearmanr(x, y).statistic)


def domain_bootstrap_ci(
    tables,
    statistic: Callable,
    *,
    domains: Sequence[str],
    n_resamples: int,
    seed: int = 0,
) -> tuple[float, float]:
    """CI of a statistic of per-domain perplexities, resampling passages within each domain.

    ``tables`` is a ``perplexity`` table, or a list of them for several models
    scored on the same passages (resampled together: a paired comparison).
    ``statistic`` receives {domain: pooled perplexity} (a list of such dicts for a
    list of tables) and returns a number: a ratio of two domains, a rank
    correlation with a reference, a difference between models...
    Domains are resampled independently of each other.
    """
    many = isinstance(tables, (list, tuple))
    tables = list(tables) if many else [tables]
    ids = tables[0]["passage_id"].tolist()
    if any(t["passage_id"].tolist() != ids for t in tables[1:]):
        raise ValueError("paired comparison needs every model scored on the same passages in the same order")
    nll = [t["nll_sum"].to_numpy(float) for t in tables]
    ntok = [t["n_tokens"].to_numpy(float) for t in tables]
    groups = [np.flatnonzero(tables[0]["domain"].to_numpy() == d) for d in domains]

    def of_indices(*idx):
        ppl = [{d: float(np.exp(n[i].sum() / k[i].sum())) for d, i in zip(domains, idx)} for n, k in zip(nll, ntok)]
        return statistic(ppl if many else ppl[0])

    return bootstrap_ci(groups, of_indices, paired=False, n_resamples=n_resamples, seed=seed)
