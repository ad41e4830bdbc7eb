"""Statistics used by instruments and predictions: thin wrappers over scipy.stats.

Every interval is a 95% **BCa** bootstrap interval (bias-corrected and accelerated, Efron
1987; ``scipy.stats.bootstrap(method="BCa")``) unless said otherwise: at the sample sizes
Atlas runs on (12 passages per domain in the starter corpus) the plain percentile interval
under-covers -- 91% for a domain's mean NLL at n = 12 in a seeded simulation
(``tests/test_statistics.py``). An interval is an ``Interval``: a (low, high) tuple that
also carries its bootstrap replicates, from which ``one_sided_p`` reads how often the
statistic fell on the wrong side of a threshold (for multiple-comparison adjustment).

Every resampling interval takes ``n_resamples``; None (the default) is the active profile's
``bootstrap_resamples`` (``atlas.active_profile``): inside a prediction body, the run's profile.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
from scipy import stats

from ._profiles import resamples
from ._public import public

__all__ = ["Interval", "bootstrap_ci", "domain_bootstrap_ci", "hierarchical_ci", "holm", "mean_difference",
           "one_sided_p", "pooled_hierarchical_ci", "spearman", "t_interval"]


class Interval(tuple):
    """A confidence interval (low, high).

    ``replicates``: the bootstrap distribution it was read from, if any; ``unit``: what was resampled
    (a criterion's ``unit``: passages, domains, layers, seeds...), checked against the criterion that
    judges it; ``at_level``: the same interval at another confidence level, ``confidence -> (low, high)``,
    from which ``one_sided_p`` reads the p-value that agrees with it (None: percentile of ``replicates``)."""

    def __new__(cls, low: float, high: float, replicates: np.ndarray | None = None, *, unit: str | None = None,
                at_level: Callable[[float], tuple[float, float]] | None = None):
        interval = super().__new__(cls, (float(low), float(high)))
        interval.replicates, interval.unit, interval.at_level = replicates, unit, at_level
        return interval

    def of_unit(self, unit: str) -> Interval:
        """The same interval, saying which unit it resampled."""
        return Interval(*self, self.replicates, unit=unit, at_level=self.at_level)


def one_sided_p(ci, threshold: float, direction: str) -> float | None:
    """The one-sided p-value of the claim ``statistic direction threshold`` that agrees with the interval: the
    smallest alpha at which the (1 - 2 alpha) interval ``ci`` lies wholly on the claimed side (test inversion),
    so p < 0.025 exactly when the 95% interval supports the claim. Found by bisection on the confidence level
    through ``ci.at_level``; for a percentile interval it is the share of replicates on the other side.
    None without replicates or a level function."""
    at_level = getattr(ci, "at_level", None)
    if at_level is None:
        at_level = _percentile_levels(getattr(ci, "replicates", None))
        if at_level is None:
            return None
    upward = direction in (">", ">=")

    def excludes(confidence: float) -> bool:
        low, high = at_level(confidence)
        return bool(low > threshold) if upward else bool(high < threshold)

    lo, hi = 1e-6, 1 - 1e-6  # confidence levels: excluded at lo (narrow) ... not excluded at hi (wide)
    if not excludes(lo):  # the estimate is on the other side: p = 1 - the other side's p (0.5 on the threshold)
        low, high = at_level(lo)
        against = high < threshold if upward else low > threshold
        return 1 - one_sided_p(ci, threshold, "<" if upward else ">") if against else 0.5
    if excludes(hi):
        return (1 - hi) / 2
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if excludes(mid) else (lo, mid)
    return float((1 - hi) / 2)


def _percentile_levels(replicates) -> Callable[[float], tuple[float, float]] | None:
    if replicates is None:
        return None
    values = np.asarray(replicates, float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return None
    return lambda c: tuple(np.quantile(values, [(1 - c) / 2, (1 + c) / 2]))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's (1979) step-down adjusted p-values, in the order given: controls the family-wise error rate."""
    order = np.argsort(p_values, kind="stable")
    m, adjusted, running = len(p_values), [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def bootstrap_ci(
    samples: Sequence[np.ndarray],
    statistic: Callable[..., float],
    *,
    paired: bool,
    n_resamples: int | None = None,
    seed: int = 0,
    confidence: float = 0.95,
    method: str = "BCa",
    vectorized: bool = False,
) -> Interval:
    """Bootstrap CI of ``statistic(*samples)`` (scipy.stats.bootstrap), BCa unless ``method`` says otherwise.

    ``paired=True`` resamples the same indices in every sample (e.g. a passage's
    NLL together with its token count); ``paired=False`` resamples each sample on
    its own (e.g. passages within each domain). Returns (nan, nan) when a sample
    has fewer than two observations, or when the interval is undefined (a
    degenerate bootstrap distribution, for which BCa has no acceleration).

    ``vectorized=True``: ``statistic(*resampled, axis=-1)`` takes a whole batch of
    resamples at once (scipy's convention), for statistics too costly to call once
    per resample. It may return NaN for a resample where it is undefined (e.g. a
    statistic of pairs of distinct passages on a resample that drew one passage
    only); when such resamples leave the interval undefined, it is the percentile
    interval of the defined replicates.
    """
    if min(len(s) for s in samples) < 2:
        return Interval(float("nan"), float("nan"))
    with np.errstate(all="ignore"), _quiet():
        res = stats.bootstrap(
            tuple(np.asarray(s) for s in samples),
            statistic,
            paired=paired,
            vectorized=vectorized,
            n_resamples=resamples(n_resamples),
            confidence_level=confidence,
            method=method,
            rng=np.random.default_rng(seed),
        )
    low, high, replicates = res.confidence_interval.low, res.confidence_interval.high, res.bootstrap_distribution
    if vectorized and np.isnan([low, high]).any() and np.isfinite(replicates).any():
        tail = (1 - confidence) / 2 * 100
        low, high = np.nanpercentile(replicates, [tail, 100 - tail])
        return Interval(low, high, replicates)
    data = tuple(np.asarray(s) for s in samples)

    def at_level(level: float) -> tuple[float, float]:  # the same bootstrap distribution, another level
        with np.errstate(all="ignore"), _quiet():
            again = stats.bootstrap(data, statistic, paired=paired, vectorized=vectorized, n_resamples=0,
                                    confidence_level=level, method=method, bootstrap_result=res,
                                    rng=np.random.default_rng(seed))
        return again.confidence_interval.low, again.confidence_interval.high

    return Interval(low, high, replicates, at_level=at_level)


@contextmanager
def _quiet():
    """scipy warns when a bootstrap distribution is degenerate; the NaN interval it returns says so already."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        yield


def t_interval(values: Sequence[float], *, unit: str, confidence: float = 0.95) -> Interval:
    """Student's t interval of the mean of independent units (e.g. seed pairs): mean +- t(n - 1) s / sqrt(n).

    For a handful of units, where a bootstrap has too few distinct resamples to form an interval (3 units:
    10); exact under normal units. ``at_level`` gives the same interval at another level (``one_sided_p``
    then reads the one-sided t-test's p-value). Under two units it is (nan, nan): no interval."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return Interval(float("nan"), float("nan"), unit=unit)
    return _t_about(float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values))), len(values) - 1,
                    unit=unit, confidence=confidence)


def _t_about(estimate: float, se: float, df: int, *, unit: str, confidence: float,
             replicates: np.ndarray | None = None) -> Interval:
    """estimate +- t(df) se, at ``confidence`` and (``at_level``) at any other level."""
    def at_level(level: float) -> tuple[float, float]:
        half = stats.t.ppf(0.5 + level / 2, df) * se
        return float(estimate - half), float(estimate + half)

    return Interval(*at_level(confidence), replicates, unit=unit, at_level=at_level)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (scipy.stats.spearmanr)."""
    return float(stats.spearmanr(x, y).statistic)


def domain_bootstrap_ci(
    tables,
    statistic: Callable,
    *,
    domains: Sequence[str],
    n_resamples: int | None = None,
    seed: int = 0,
) -> Interval:
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


def mean_difference(values: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of the first stratum's unit values minus the second's, over the last axis (a territory contrast):
    ``combine`` for ``hierarchical_ci``."""
    return np.mean(values[0], axis=-1) - np.mean(values[1], axis=-1)


def hierarchical_ci(
    strata: Sequence[Sequence[Hashable]],
    combine: Callable[[list[np.ndarray]], np.ndarray],
    *,
    value: Callable[[Hashable, np.ndarray], np.ndarray] | None = None,
    passages: Mapping[Hashable, int] | None = None,
    n_resamples: int | None = None,
    seed: int = 0,
    confidence: float = 0.95,
    unit: str = "domains",
) -> Interval:
    """CI of a statistic of nested data -- passages within domains, domains within strata (territories) --
    resampling the claim's own unit first: a claim about territories generalises over their domains, and one
    corpus is one draw of them. A passage bootstrap within fixed domains holds that draw fixed: with a modest
    spread between domains and no territory effect it called a three-against-three contrast "supported" 28-46%
    of the time (issue 19; ``tests/test_calibration_domains.py``).

    Two stages (Davison & Hinkley 1997, section 3.8; Field & Welsh 2007): each replicate draws, within each
    stratum of k units, k - 1 units with replacement, and within each drawn unit its passages with replacement
    (independently for each draw of a unit). Drawing k - 1 rather than k is the rescaled bootstrap of McCarthy &
    Snowden (1985) and Rao & Wu (1988): the bootstrap variance of a mean over units is then the unbiased
    s^2 / k, not (k - 1)/k of it. The passage stage adds the passages' share of the variance a second time
    (it is already in the spread of the unit values): conservative, by at most that share. The interval is
    estimate +- t(df) se, se the replicates' standard deviation and df = sum over strata of (k - 1), the
    degrees of freedom the units' spread is estimated on: with three domains a side, t(4) = 2.78 where a
    percentile interval reads about 1.96. In 1000 simulated null corpora (three domains a side, 8 passages,
    domain SD 0.1, passage SD 0.01-0.1) the plain two-stage percentile interval (k drawn) was "supported" 7-10%
    of the time, with k - 1 drawn 4-6%; this interval 0-1.3% in 400 (domain SD 0.05-0.1, passage SD 0.1-0.3;
    nominal 2.5%). Conservative where passages dominate: ``tests/test_calibration_domains.py`` checks coverage.

    ``strata``: the units (domains) of each stratum, resampled within it. ``value(unit, counts)``: the unit's
    value from its passages weighted by ``counts`` [..., n] (how often each was drawn; all ones: the sample)
    -> [...]; ``passages``: {unit: n}. Without ``value`` the units have no nested level: a unit's value is its
    position in its stratum, and ``combine`` looks it up (e.g. pairs of domains in a Gram matrix).
    ``combine(values)``: the statistic from the units' values, one array [..., m] per stratum (e.g.
    ``mean_difference``); a NaN replicate (undefined on that draw) is left out. Under two units in a stratum,
    or with no finite replicate, the interval is (nan, nan). ``at_level`` gives it at another level.
    """
    strata = [list(s) for s in strata]
    if value is not None and passages is None:
        raise ValueError("hierarchical_ci: a unit value needs the number of passages of each unit (passages=)")
    if min(len(s) for s in strata) < 2:
        return Interval(float("nan"), float("nan"), unit=unit)
    rng = np.random.default_rng(seed)

    def values(stratum: list, drawn: np.ndarray | None) -> np.ndarray:  # drawn: positions [B, k - 1], None: sample
        if value is None:
            return np.arange(len(stratum)) if drawn is None else drawn
        if drawn is None:
            return np.array([value(u, np.ones(passages[u])) for u in stratum], float)
        out = np.full(drawn.shape, np.nan)
        for j, u in enumerate(stratum):
            n = passages[u]
            at = drawn == j
            out[at] = np.asarray(value(u, rng.multinomial(n, np.full(n, 1.0 / n), size=drawn.shape)), float)[at]
        return out

    with np.errstate(invalid="ignore", divide="ignore"):
        estimate = float(combine([values(s, None) for s in strata]))
        drawn = [rng.integers(len(s), size=(resamples(n_resamples), len(s) - 1)) for s in strata]
        replicates = np.asarray(combine([values(s, d) for s, d in zip(strata, drawn)]), float)
    finite = replicates[np.isfinite(replicates)]
    if len(finite) < 2 or not np.isfinite(estimate):
        return Interval(float("nan"), float("nan"), replicates, unit=unit)
    return _t_about(estimate, float(finite.std(ddof=1)), sum(len(s) - 1 for s in strata), unit=unit,
                    confidence=confidence, replicates=replicates)


def pooled_hierarchical_ci(tables, value: Callable[[np.ndarray], np.ndarray], strata: Sequence[Sequence[str]], *,
                           n_resamples: int | None = None, seed: int = 0,
                           combine: Callable = mean_difference) -> Interval:
    """``hierarchical_ci`` over tables of passages (columns passage_id, domain, nll_sum, n_tokens: ``perplexity``,
    or one t of ``interpolation_passages``), several of them for the same passages in the same order (several
    models, or points of a line: resampled together). A domain's value is ``value(log_ppl)``, log_ppl [tables,
    ...] its pooled log perplexity (summed NLL / summed tokens of the drawn passages) in each table."""
    ids = tables[0]["passage_id"].tolist()
    if any(t["passage_id"].tolist() != ids for t in tables[1:]):
        raise ValueError("the tables must hold the same passages in the same order")
    rows = {d: np.flatnonzero(tables[0]["domain"].to_numpy() == d) for s in strata for d in s}
    nll = np.stack([t["nll_sum"].to_numpy(float) for t in tables])  # [tables, passages]
    ntok = np.stack([t["n_tokens"].to_numpy(float) for t in tables])

    def of_domain(domain: str, counts: np.ndarray) -> np.ndarray:
        i = rows[domain]
        return value(np.moveaxis((counts @ nll[:, i].T) / (counts @ ntok[:, i].T), -1, 0))

    return hierarchical_ci(strata, combine, value=of_domain, passages={d: len(i) for d, i in rows.items()},
                           n_resamples=n_resamples, seed=seed)


public("atlas.stats", Interval, bootstrap_ci, domain_bootstrap_ci, hierarchical_ci, mean_difference, one_sided_p,
       pooled_hierarchical_ci, spearman, t_interval)
