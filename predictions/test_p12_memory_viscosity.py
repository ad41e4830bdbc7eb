"""P12 — memory vs viscosity: the seed's central open experiment.

Seed: framework-v12-navigator, Memory: "cannot be measured independently from viscosity in
a frozen deployed model"; flag: "Memory/viscosity distinguishability test unperformed:
central open experiment". The claim tested: memory and viscosity are distinguishable, i.e.
at matched held-out loss the Hessian spectrum (viscosity) still remembers the curriculum.
Instrument ``memory`` on the Lab's ``memory-lm`` (a 2-layer byte-level LM; curriculum A:
technical documentation, then poetry; B: the reverse), seeds 0.. of each, every endpoint
its checkpoint closest to a common held-out loss (tolerance in the instrument's settings).
Per endpoint z = (log lambda_max, log trace). Criterion, fixed before the data:
log R > 0, R = mean |z_a - z_b|^2 over pairs of different curricula and different seeds /
the same over pairs of one curriculum and different seeds (pairs of one seed share their
initial weights across curricula, so they are left out of both). Interval: seeds
resampled (a seed is the unit: its two runs), distinct-seed pairs only; the exact
permutation test swaps the two curricula within seeds (2^n relabelings; its p-value's
resolution is 2^-(n-1)). Refuted or inconclusive: the Framework's flag stands.
"""

import itertools

import numpy as np
import pytest

from atlas import Criterion, bootstrap_ci

SOURCE = "framework-v12-navigator: Memory, 'Memory/viscosity distinguishability test unperformed'"
DISTINGUISHABLE = Criterion(
    statistic="log(mean between-curricula / mean within-curriculum squared distance of (log lambda_max, log trace)),"
              " pairs of different seeds", direction=">", threshold=0.0,
    ci="95% percentile bootstrap over seeds (distinct-seed pairs only)",
    sample="lab:memory-lm, seeds 0..n-1 per curriculum, endpoints at matched held-out loss")


def log_ratio(za, zb, counts):
    """za, zb: [n, 2] features of curriculum A and B by seed; counts [..., n] -> log R [...]."""
    between = ((za[:, None] - zb[None]) ** 2).sum(-1)  # [n, n], seed s of A against seed t of B
    within = (((za[:, None] - za[None]) ** 2).sum(-1) + ((zb[:, None] - zb[None]) ** 2).sum(-1)) / 2  # zero diagonal
    quad = lambda m: np.einsum("...i,ij,...j->...", counts, m, counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log((quad(between) - (counts ** 2) @ np.diag(between)) / quad(within))


@pytest.mark.prediction(
    id="P12-memory-vs-viscosity", form="named", model="lab:memory-lm@0", needs=("memory",), source=SOURCE,
    criterion=DISTINGUISHABLE,
    claim="At matched loss, endpoints of two curricula differ in Hessian spectrum more than seeds within one do.")
def test_memory_is_distinguishable_from_viscosity(prediction):
    memory = prediction.evidence["memory"]["memory"]
    labels = list(dict.fromkeys(memory["curriculum"]))  # curriculum A (the recipe's order) first
    ok = memory[memory["matched"] & (memory["lambda_max"] > 0) & (memory["trace"] > 0)]
    wide = [ok[ok["curriculum"] == label].set_index("seed")[["lambda_max", "trace"]] for label in labels]
    seeds = sorted(set(wide[0].index) & set(wide[1].index))  # seeds with both endpoints matched
    za, zb = (np.log(w.loc[seeds].to_numpy(float)).reshape(-1, 2) for w in wide)  # [n, 2] each
    units = np.arange(len(seeds))
    counted = lambda idx, axis=-1: log_ratio(za, zb, (np.expand_dims(idx, -1) == units).sum(-2))
    effect = float(log_ratio(za, zb, np.ones(len(seeds)))) if len(seeds) >= 2 else float("nan")
    ci = bootstrap_ci((units,), counted, paired=False, n_resamples=prediction.profile.bootstrap_resamples,
                      vectorized=True, method="percentile")
    flips = np.array(list(itertools.product([False, True], repeat=len(seeds))), dtype=bool)[:, :, None]  # [2^n, n, 1]
    null = [log_ratio(np.where(f, zb, za), np.where(f, za, zb), np.ones(len(seeds))) for f in flips]
    p = float(np.mean(np.array(null) >= effect - 1e-12)) if len(seeds) >= 2 else None  # exact, one-sided
    pairs = prediction.evidence["memory"]["memory_pairs"]
    distinct = pairs[pairs["seed_a"] != pairs["seed_b"]].groupby("same_curriculum")
    domains = prediction.evidence["memory"]["memory_domains"].pivot_table(index="curriculum", columns="domain",
                                                                          values="loss")
    prediction.conclude(effect=effect, ci=ci, n=len(seeds), evidence={
        "permutation_p": p, "seeds": seeds, "target_loss": float(memory["target"].iloc[0]),
        "max_abs_gap": float(memory["gap"].abs().max()),
        "steps": {f"{c}@{s}": int(step) for c, s, step in zip(memory["curriculum"], memory["seed"], memory["step"])},
        "mean_log_lambda_max_trace": {label: np.log(w).mean().round(3).to_dict() for label, w in zip(labels, wide)},
        "domain_loss_by_curriculum": domains.round(4).to_dict("index"),
        "between_vs_within (distinct seeds)": distinct[["profile_distance", "cka", "parameter_distance"]].mean()
        .rename(index={True: "within", False: "between"}).round(4).to_dict("index")})
