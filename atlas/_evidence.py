"""The common steps of a prediction body, in one place: profiles over layers, and their inference.

A claim about layers ("coupling rises with depth", "coupled layers resist ablation") is a
statement about a *profile*, one number per layer, estimated from units that were sampled:
passages of text (or the random probes of a Hessian estimate). Layers are not those units.
Neighbouring layers share most of their input, so a layer profile is smooth, and treating
its 30 points as 30 independent pairs -- bootstrapping (layer, value) pairs -- lets that
smoothness pass for evidence: in a simulation of 1000 nulls with n = 30 layers, AR(1)
profiles (phi = 0.8) gave that interval 56% coverage and 23% false "supported" verdicts,
independent random walks 49% and 27%, against a nominal 2.5%.

So here a profile is a ``LayerSample``: the per-unit measurements and the rule that pools
any multiset of units into a profile (a mean, or a perplexity from summed NLL). The
bootstrap resamples **units**, recomputes the whole profile, and recomputes the statistic
(Spearman's rho between two profiles, or a contrast of layers) in every resample.
Resamples are multiplicity vectors (counts [B, n]), so pooling is a matrix product and
2000 resamples of a 30-layer profile take milliseconds.

Which interval, for a correlation between two layer profiles (or a profile and depth): the
claims are about layers ("in a causal LM, coupling rises with depth"), and one model's profile
is one draw of them. Resampling passages holds that draw fixed: when every passage shares one
smooth profile with no trend (AR(1), phi = 0.8, or a random walk, over 30 layers), the passage
bootstrap called it "supported" 39-47% of the time at 8-64 passages. So the criterion's
interval is over **layers**: Fisher's z of Spearman's rho with variance 1.06 / (n_eff - 3)
(Fieller, Hartley & Pearson 1957) at the effective number of independent layers
n_eff = L (1 - r_x r_y) / (1 + r_x r_y), r the profiles' lag-1 autocorrelations (Bretherton et
al. 1999, eq. 31). In 1000 simulated models per cell (30 or 12 layers, 8 or 64 passages; a shared
AR(1) or random-walk profile, or independent noise; against depth or against a second, independent
profile) it gave 1.1-2.9% false "supported" (nominal 2.5%). Alternatives measured on the same nulls:
the autocorrelation of the regression residuals instead of the profile's own, 5-23%; phase-randomised
surrogates (Ebisuzaki 1997), 7% (AR(1)) and 24% (random walk); a circular shift cannot reach p < 1/L
(1/12 on GPT-2) at all. The price is power, and it is the price of one model: a random walk of 30
layers reaches rho 0.94 with depth 2.5% of the time, so no test calibrated against it can call a
weaker single-model trend. The interval resampling the units behind each profile (the passages, or a
Hessian estimate's probes) is kept as evidence: how precisely this model's rho is measured.

For a contrast of layers within one model (a linear function of its profile, "layer 4 dips") the
claim is about that model's named layers and the unit is passages: the interval is BCa (Efron 1987),
its acceleration from the jackknife over units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special, stats

from ._profiles import resamples
from ._public import public
from ._stats import Interval, domain_bootstrap_ci, pooled_hierarchical_ci

MIN_LAYERS = 5  # fewer layers give a rank correlation of a handful of values (two give +-1 always): no interval

__all__ = ["MIN_LAYERS", "LayerCorrelation", "LayerSample", "ParametricProfile", "ablation_profile",
           "effective_layers", "fixed_profile", "judge_domain_pair", "layer_contrast", "layer_correlation",
           "mean_profile", "paired_perplexity", "pooled_perplexity", "rho_over_layers", "split_halves", "untrained"]


@dataclass(frozen=True)
class LayerSample:
    """A per-layer profile estimated from ``n`` sampled units.

    ``pool(counts)``: counts [B, n], each row a multiplicity of the units (a bootstrap
    resample; all ones for the sample itself) -> profiles [B, L] over ``layers``.
    ``n == 0``: a fixed profile (e.g. the layer index), never resampled.
    """

    layers: np.ndarray  # [L]
    n: int
    pool: Callable[[np.ndarray], np.ndarray]
    unit: str = "passages"

    @property
    def profile(self) -> np.ndarray:
        return self.pool(np.ones((1, self.n)))[0]  # [L]

    def resampled(self, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
        """Profiles of ``n_resamples`` bootstrap resamples of the units: [B, L]."""
        if self.n == 0:
            return np.broadcast_to(self.profile, (n_resamples, len(self.layers)))
        draws = rng.integers(0, self.n, size=(n_resamples, self.n))  # [B, n]
        counts = np.zeros((n_resamples, self.n))
        np.add.at(counts, (np.arange(n_resamples)[:, None], draws), 1.0)
        return self.pool(counts)

    def jackknife(self) -> np.ndarray:
        """Profiles with one unit left out each: [n, L] (empty for a fixed profile)."""
        return self.pool(1.0 - np.eye(self.n)) if self.n else np.empty((0, len(self.layers)))

    def at(self, layers) -> LayerSample:
        """The same sample restricted to ``layers`` (in that order)."""
        index = [int(np.flatnonzero(self.layers == layer)[0]) for layer in layers]
        return LayerSample(np.asarray(layers), self.n, lambda counts: self.pool(counts)[:, index], self.unit)


@dataclass(frozen=True)
class ParametricProfile:
    """A profile known by estimates and standard errors only (e.g. a Hessian estimate's probe noise): each
    resample draws every layer from a log-normal with that mean and relative error (the values are positive),
    independently across layers. It stands in for a ``LayerSample`` in ``layer_correlation`` (unpaired)."""

    layers: np.ndarray  # [L]
    mean: np.ndarray  # [L]
    stderr: np.ndarray  # [L]
    n: int = 0  # the units behind the standard errors (e.g. probes), for the record
    unit: str = "probes"

    @property
    def profile(self) -> np.ndarray:
        return np.asarray(self.mean, float)

    def resampled(self, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
        sigma = np.sqrt(np.log1p((np.asarray(self.stderr, float) / self.profile) ** 2))  # log-normal with that CV
        return self.profile * np.exp(rng.normal(size=(n_resamples, len(self.layers))) * sigma - sigma**2 / 2)

    def at(self, layers) -> ParametricProfile:
        index = [int(np.flatnonzero(self.layers == layer)[0]) for layer in layers]
        return ParametricProfile(np.asarray(layers), self.profile[index], np.asarray(self.stderr, float)[index],
                                 self.n, self.unit)


def fixed_profile(layers, values=None) -> LayerSample:
    """A profile that is not sampled: ``values`` per layer (default: the layer numbers themselves)."""
    layers = np.asarray(layers)
    values = np.asarray(layers if values is None else values, float)
    return LayerSample(layers, 0, lambda counts: np.broadcast_to(values, (len(counts), len(values))), "none")


def mean_profile(table: pd.DataFrame, value: str, unit: str = "passage_id", layer: str = "layer") -> LayerSample:
    """The per-layer mean of ``value`` over units (a unit may lack some layers: those cells are left out)."""
    wide = table.pivot_table(index=unit, columns=layer, values=value, aggfunc="mean", sort=True)  # [n, L]
    sums, present = wide.fillna(0.0).to_numpy(float), wide.notna().to_numpy(float)

    def pool(counts: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return (counts @ sums) / (counts @ present)

    return LayerSample(wide.columns.to_numpy(), len(wide), pool, "passages" if unit == "passage_id" else unit)


def ablation_profile(passages: pd.DataFrame) -> LayerSample:
    """Per layer, the mean over its heads of the perplexity change when the head is ablated, pooled over the
    resampled passages as the instrument pools them: exp(sum NLL / sum tokens) with and without the head."""
    passages = passages.sort_values(["passage_id", "layer", "head"])
    ids = passages["passage_id"].unique()
    layers, heads = np.sort(passages["layer"].unique()), np.sort(passages["head"].unique())
    nll = passages["nll_sum"].to_numpy(float).reshape(len(ids), len(layers) * len(heads))  # [n, L*H]
    first = passages.groupby("passage_id", sort=True).first()
    base, tokens = first["baseline_nll_sum"].to_numpy(float), first["n_tokens"].to_numpy(float)  # [n]

    def pool(counts: np.ndarray) -> np.ndarray:
        n_tok = counts @ tokens  # [B]
        ablated = np.exp((counts @ nll) / n_tok[:, None]).reshape(len(counts), len(layers), len(heads))
        return (ablated - np.exp((counts @ base) / n_tok)[:, None, None]).mean(-1)  # [B, L]

    return LayerSample(layers, len(ids), pool)


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of x, y [B, L] -> [B] (NaN where a row is constant or not finite)."""
    rx, ry = stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rx * ry).sum(-1) / np.sqrt((rx**2).sum(-1) * (ry**2).sum(-1))
    bad = ~(np.isfinite(x).all(-1) & np.isfinite(y).all(-1))
    return np.where(bad, np.nan, rho)


def _bca(estimate: float, replicates: np.ndarray, jackknives: list[np.ndarray], confidence: float) -> Interval:
    """BCa interval from bootstrap replicates and one jackknife per independently resampled sample
    (the multi-sample acceleration of scipy.stats.bootstrap). NaN when undefined."""
    replicates = replicates[np.isfinite(replicates)]
    nan = Interval(float("nan"), float("nan"), replicates)
    if len(replicates) < 2 or not np.isfinite(estimate) or np.ptp(replicates) == 0:
        return nan
    z0 = special.ndtri(np.mean(replicates < estimate))
    nums, dens = 0.0, 0.0
    for jack in jackknives:
        if len(jack) < 2 or not np.isfinite(jack).all():
            return nan
        u = (len(jack) - 1) * (jack.mean() - jack)
        nums += (u**3).sum() / len(jack) ** 3
        dens += (u**2).sum() / len(jack) ** 2
    accel = nums / (6 * dens**1.5) if dens > 0 else 0.0

    def at_level(level: float) -> tuple[float, float]:
        z = special.ndtri(np.array([(1 - level) / 2, (1 + level) / 2]))
        levels = special.ndtr(z0 + (z0 + z) / (1 - accel * (z0 + z)))
        return tuple(np.quantile(replicates, levels)) if np.isfinite(levels).all() else (np.nan, np.nan)

    low, high = at_level(confidence)
    return Interval(low, high, replicates, at_level=at_level) if np.isfinite([low, high]).all() else nan


def _percentile(replicates: np.ndarray, confidence: float) -> Interval:
    finite = replicates[np.isfinite(replicates)]
    if len(finite) < 0.9 * len(replicates) or len(finite) < 2:  # too many undefined resamples to read an interval
        return Interval(float("nan"), float("nan"), replicates)
    low, high = np.quantile(finite, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(low, high, finite)


def effective_layers(x: np.ndarray, y: np.ndarray) -> float:
    """Bretherton et al. (1999) effective number of independent layers for a correlation of two profiles."""
    def lag1(v):
        v = np.asarray(v, float) - np.mean(v)
        return float((v[:-1] * v[1:]).sum() / (v * v).sum()) if (v * v).sum() > 0 else 0.0

    r = max(0.0, lag1(x)) * max(0.0, lag1(y))
    return float(np.clip(len(x) * (1 - r) / (1 + r), 2.0, len(x)))


SPEARMAN_Z_VARIANCE = 1.06  # var(atanh rho_S) ~ 1.06 / (n - 3) (Fieller, Hartley & Pearson 1957)


def rho_over_layers(rho: float, n_eff: float, confidence: float = 0.95) -> Interval:
    """The interval of Spearman's rho over layers: Fisher's z at ``n_eff`` independent layers, tagged with the
    unit "layers", with ``at_level`` so its p-value agrees with it. NaN (inconclusive) at n_eff <= 3."""
    if not (np.isfinite(rho) and n_eff > 3):
        return Interval(float("nan"), float("nan"), unit="layers")
    z, se = np.arctanh(np.clip(rho, -1 + 1e-12, 1 - 1e-12)), np.sqrt(SPEARMAN_Z_VARIANCE / (n_eff - 3))

    def at_level(level: float) -> tuple[float, float]:
        half = special.ndtri((1 + level) / 2) * se
        return float(np.tanh(z - half)), float(np.tanh(z + half))

    return Interval(*at_level(confidence), unit="layers", at_level=at_level)


@dataclass(frozen=True)
class LayerCorrelation:
    rho: float
    ci: Interval  # over layers, at n_eff: the criterion's interval
    n_layers: int
    n_eff: float  # effective independent layers (Bretherton et al. 1999)
    n_units: dict  # units resampled per sample, e.g. {"x": 64, "y": 8}
    within: Interval  # resampling those units, the profiles' layers held fixed: this model's rho's precision

    def evidence(self) -> dict:
        return {"rho": self.rho, "n_layers": self.n_layers, "n_eff_layers": round(self.n_eff, 2),
                "resampled_units": self.n_units, "rho_ci_resampling_units": [float(v) for v in self.within]}


def layer_correlation(x: LayerSample, y: LayerSample, *, n_resamples: int | None = None, seed: int = 0,
                      paired: bool = False, confidence: float = 0.95) -> LayerCorrelation:
    """Spearman's rho between two layer profiles over their shared layers; its interval over layers (Fisher's z at
    the effective number of layers: ``rho_over_layers``), and, as evidence of the measurement's precision, a
    percentile interval resampling the units each profile was estimated from (``paired``: the same units,
    resampled together). Over fewer than ``MIN_LAYERS`` layers there is no interval (NaN: inconclusive).
    ``n_resamples``: None is the active profile's (``atlas.stats``)."""
    n_resamples = resamples(n_resamples)
    layers = [layer for layer in x.layers if layer in set(y.layers)]
    x, y = x.at(layers), y.at(layers)
    rho = float(_spearman_rows(x.profile[None], y.profile[None])[0])
    rng = np.random.default_rng(seed)
    if paired:
        if x.n != y.n:
            raise ValueError("a paired layer correlation needs both profiles estimated from the same units")
        draws = rng.integers(0, x.n, size=(n_resamples, x.n))
        counts = np.zeros((n_resamples, x.n))
        np.add.at(counts, (np.arange(n_resamples)[:, None], draws), 1.0)
        replicates = _spearman_rows(x.pool(counts), y.pool(counts))
    else:
        replicates = _spearman_rows(x.resampled(n_resamples, rng), y.resampled(n_resamples, rng))
    n_eff = effective_layers(x.profile, y.profile)
    if len(layers) < MIN_LAYERS:
        ci, within = Interval(float("nan"), float("nan"), unit="layers"), Interval(float("nan"), float("nan"))
    else:
        ci = rho_over_layers(rho, n_eff, confidence)
        within = _percentile(replicates, confidence) if (x.n or y.n) else Interval(rho, rho)
    return LayerCorrelation(rho, ci, len(layers), n_eff, {k: s.n for k, s in (("x", x), ("y", y)) if s.n}, within)


def layer_contrast(sample: LayerSample, weights: dict[int, float], *, n_resamples: int | None = None, seed: int = 0,
                   confidence: float = 0.95) -> tuple[float, Interval]:
    """A weighted sum of layers of a profile (e.g. coupling(4) - mean(coupling(3), coupling(5))) with a BCa CI
    resampling its units (tagged with their unit): the layers' errors are correlated through the shared
    passages, and this keeps it. A claim about one model's named layers, not about layers in general."""
    part = sample.at(list(weights))
    w = np.array(list(weights.values()), float)
    effect = float(part.profile @ w)
    replicates = part.resampled(resamples(n_resamples), np.random.default_rng(seed)) @ w
    return effect, _bca(effect, replicates, [part.jackknife() @ w], confidence).of_unit(part.unit)


def split_halves(passages: pd.DataFrame, domain: str = "domain") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each domain's rows in two halves, alternating in table order: (first, third, ...) and (second, fourth,
    ...). For a statistic that picks something on the data (the extreme domains), choose on one half and
    estimate on the other, so the choice cannot flatter the estimate."""
    position = passages.groupby(domain, sort=False).cumcount()
    return (passages[position % 2 == 0].reset_index(drop=True), passages[position % 2 == 1].reset_index(drop=True))


def untrained(table: pd.DataFrame, prediction) -> pd.DataFrame:
    """The rows of ``table`` (a ``passage_id`` column) whose passages none of the prediction's models trained on:
    a Lab model knows its training passages (``atlas.lab._runs.trained_on``); others are taken as unknown. A base
    model and its tuned copy compared on what the copy was tuned on would measure memorisation, not the claim."""
    from .lab._runs import trained_on

    if getattr(prediction, "simulated", False):  # calibration's drawn evidence: no model trained on its passages
        return table.reset_index(drop=True)
    seen = set().union(*(trained_on(m) for m in prediction.model_names))
    return table[~table["passage_id"].isin(seen)].reset_index(drop=True)


def pooled_perplexity(passages: pd.DataFrame) -> dict[str, float]:
    """{domain: exp(summed NLL / summed scored tokens)} of a table of passages (columns domain, nll_sum,
    n_tokens; e.g. ``perplexity`` or one t of ``interpolation_passages``), domains in order of appearance."""
    return {d: float(np.exp(g["nll_sum"].sum() / g["n_tokens"].sum()))
            for d, g in passages.groupby("domain", sort=False)}


def paired_perplexity(prediction) -> tuple[list[pd.DataFrame], list[dict[str, float]], int]:
    """A model pair's ``perplexity`` tables restricted to the passages neither model trained on (``untrained``),
    each model's per-domain pooled perplexity on them, and how many passages were left out."""
    tables = [prediction.evidence["perplexity", m]["perplexity"] for m in prediction.model_names]
    kept = [untrained(t, prediction) for t in tables]
    ppl = [pooled_perplexity(t) for t in kept]
    return kept, ppl, len(tables[0]) - len(kept[0])


def judge_domain_pair(prediction, statistic, needed=(), *, territories=None, value=None) -> None:
    """Conclude a model-pair prediction on ``statistic([ppl_a, ppl_b])`` of the two models' per-domain
    perplexities, on the passages neither trained on, with a BCa CI resampling passages within each domain
    (both models together); not run when the held-out passages lack a domain in ``needed``. With
    ``territories`` (two tuples of domains) the claim generalises over domains: the CI is
    ``pooled_hierarchical_ci`` of the territories' mean ``value(log_ppl)`` (log_ppl [2, ...]: a domain's
    log PPL under each model) and n counts domains."""
    tables, ppl, left_out = paired_perplexity(prediction)
    missing = sorted(set(needed) - set(ppl[0]))
    if missing or len(ppl[0]) < 2:
        prediction.not_run(f"the passages neither model trained on lack the domains {missing or 'to compare'}")
    if territories:
        ci, n = pooled_hierarchical_ci(tables, value, territories), sum(map(len, territories))
    else:
        ci, n = domain_bootstrap_ci(tables, statistic, domains=list(ppl[0])), len(tables[0])
    prediction.conclude(effect=statistic(ppl), ci=ci, n=n, evidence={
        "passages": len(tables[0]), "passages_left_out_as_trained_on": left_out,
        "log_ppl_b_over_a": {d: float(np.log(ppl[1][d] / ppl[0][d])) for d in ppl[0]}})


public("atlas.evidence", LayerCorrelation, LayerSample, ParametricProfile, ablation_profile, effective_layers,
       fixed_profile, judge_domain_pair, layer_contrast, layer_correlation, mean_profile, paired_perplexity,
       pooled_perplexity, rho_over_layers, split_halves, untrained)
