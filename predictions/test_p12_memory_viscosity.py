"""P12 — memory vs viscosity: the seed's central open experiment.

Seed: framework-v12-navigator, Memory: "cannot be measured independently from viscosity in a frozen
deployed model"; flag: "Memory/viscosity distinguishability test unperformed: central open experiment".
Claim: at matched held-out loss the Hessian spectrum (viscosity) still remembers the curriculum. Instrument
``memory`` on the Lab's ``memory-lm`` (2-layer byte-level LM; curriculum A: technical documentation, then
poetry; B: the reverse), seeds 0..7 of each, each endpoint its checkpoint closest to a common held-out loss.
Per endpoint z = (log lambda_max, log trace). Criterion, fixed before the data: log R > 0, R = mean
|z_a - z_b|^2 over pairs of different curricula and different seeds / the same over pairs of one
curriculum (a seed's two runs share their initial weights: left out of both).
Seeds are the unit. Interval: leave-one-seed-out jackknife (Quenouille 1956; Tukey 1958; pair means are
U-statistics: Arvesen 1969), Student-t on the n pseudo-values (4 seeds made a bootstrap a sign test).
What refutes it: with exchangeable seeds R = 1 + |delta|^2 / tr(Sigma_A + Sigma_B) >= 1 (delta the curricula's mean
shift, Sigma their seed covariances), so the claim is delta != 0 and its refutation an equivalence bound
(Schuirmann 1987; Lakens 2017): smallest effect of interest log 2, a shift as large as the typical distance between
two seeds of one curriculum. A CI inside (-log 2, log 2) is "no effect of interest": the flag stands, as when
refuted (CI <= 0: only seeds that are not exchangeable, e.g. one seed's B run on another's A endpoint, put
curricula closer than seeds) or inconclusive. Beside it: the exact permutation test swapping curricula within seeds
(2^n relabelings). Nulls, alternative: ``atlas.simulate.memory``.
"""

import numpy as np
import pytest

from atlas import Criterion
from atlas.simulate.memory import endpoints
from atlas.stats import t_interval

SOURCE = "framework-v12-navigator: Memory, 'Memory/viscosity distinguishability test unperformed'"
DISTINGUISHABLE = Criterion(
    statistic="log(mean between-curricula / mean within-curriculum squared distance of (log lambda_max, log trace)),"
              " pairs of different seeds", direction=">", threshold=0.0,
    ci="95% leave-one-seed-out jackknife t interval (n - 1 df)", unit="seeds", scope="across seeds",
    sample="lab:memory-lm, seeds 0..n-1 per curriculum, endpoints at matched held-out loss", sesoi=float(np.log(2)),
    scale="log_ratio")
NULLS = {null.name: null for null in (
    endpoints("no curriculum effect, half of a seed's spread shared by its two runs"),
    endpoints("no curriculum effect, a seed's two runs independent", share=0.0),
    endpoints("no curriculum effect, heavy-tailed seeds (t3)", tails="t3"),
    endpoints("no curriculum effect, curriculum B's seeds spread twice as far", spread_b=4.0))}
ALTERNATIVE = endpoints("R = 2 (the SESOI), half of a seed's spread shared", ratio=2.0)


def log_ratio(za, zb, counts):
    """za, zb: [..., n, 2] features of curriculum A and B by seed; counts [..., n] -> log R [...]."""
    sq = lambda x, y: ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)  # [..., n, n]: seed s against t
    between, within = sq(za, zb), (sq(za, za) + sq(zb, zb)) / 2  # within: zero diagonal
    quad = lambda m: np.einsum("...i,...ij,...j->...", counts, m, counts)
    same_seed = (counts ** 2 * np.diagonal(between, axis1=-2, axis2=-1)).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log((quad(between) - same_seed) / quad(within))


@pytest.mark.prediction(
    id="P12-memory-vs-viscosity", form="named", model="lab:memory-lm@0", needs=("memory",), source=SOURCE,
    criterion=DISTINGUISHABLE, nulls=NULLS, alternative=ALTERNATIVE,
    claim="At matched loss, endpoints of two curricula differ in Hessian spectrum more than seeds within one do.")
def test_memory_is_distinguishable_from_viscosity(prediction):
    memory = prediction.evidence["memory"]["memory"]
    labels = list(dict.fromkeys(memory["curriculum"]))  # curriculum A (the recipe's order) first
    ok = memory[memory["matched"] & (memory["lambda_max"] > 0) & (memory["trace"] > 0)]
    wide = [ok[ok["curriculum"] == label].set_index("seed")[["lambda_max", "trace"]] for label in labels]
    seeds = sorted(set(wide[0].index) & set(wide[1].index))  # seeds with both endpoints matched
    za, zb = (np.log(w.loc[seeds].to_numpy(float)).reshape(-1, 2) for w in wide)  # [n, 2] each
    n = len(seeds)
    effect = float(log_ratio(za, zb, np.ones(n)))
    pseudo = n * effect - (n - 1) * log_ratio(za, zb, 1.0 - np.eye(n))  # [n] jackknife pseudo-values
    flips = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype(bool)[:, :, None]  # [2^n, n, 1]
    null = log_ratio(np.where(flips, zb, za), np.where(flips, za, zb), np.ones(n))  # [2^n]
    p = float(np.mean(null >= effect - 1e-12)) if n >= 2 else None  # exact, one-sided
    pairs = prediction.evidence["memory"]["memory_pairs"]
    distinct = pairs[pairs["seed_a"] != pairs["seed_b"]].groupby("same_curriculum")
    domains = prediction.evidence["memory"]["memory_domains"].groupby(["curriculum", "domain"])["loss"].mean()
    prediction.conclude(effect=effect, ci=t_interval(pseudo, unit="seeds"), n=n, evidence={
        "permutation_p": p, "seeds": seeds, "target_loss": float(memory["target"].iloc[0]),
        "max_abs_gap": float(memory["gap"].abs().max()), "jackknife_pseudo_values": np.round(pseudo, 4).tolist(),
        "steps": {f"{c}@{s}": int(step) for c, s, step in zip(memory["curriculum"], memory["seed"], memory["step"])},
        "mean_log_lambda_max_trace": {label: np.log(w).mean().round(3).to_dict() for label, w in zip(labels, wide)},
        "domain_loss_by_curriculum": domains.unstack().round(4).to_dict("index"),
        "between_vs_within (distinct seeds)": distinct[["profile_distance", "cka", "parameter_distance"]].mean()
        .rename(index={True: "within", False: "between"}).round(4).to_dict("index")})
