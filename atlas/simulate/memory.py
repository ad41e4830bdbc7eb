"""Simulated endpoints of the memory experiment: the tables of instrument ``memory`` (P12).

P12 compares, at matched held-out loss, the Hessian spectra z = (log lambda_max, log trace) of endpoints of two
curricula (A: the recipe's domain order, B: its reverse), one run of each per seed. A seed's two runs share their
initial weights, so part of a seed's deviation is common to them. ``endpoints`` draws

    z[A, s] = mu + u[s] + e[A, s],   z[B, s] = mu + delta + sqrt(spread_b) (u[s] + e[B, s]),
    u[s] ~ share * Sigma (the seed's part, common to its two runs),   e[c, s] ~ (1 - share) * Sigma

with Sigma the seeds' covariance of z (SDs ``sd``, correlation ``correlation``), so Sigma_A = Sigma and
Sigma_B = ``spread_b`` Sigma; Gaussian, or Student-t with 3 degrees of freedom scaled to the same covariance
(``tails="t3"``: now and then an outlying seed). delta, along the first principal axis of Sigma, sets the
population ratio P12 estimates,

    R = E|z[A, s] - z[B, t]|^2 / E|z[c, s] - z[c, t]|^2 (s != t) = 1 + |delta|^2 / tr(Sigma_A + Sigma_B),

so ``ratio=1`` is a world with no curriculum effect (the nulls) and ``ratio=e^sesoi`` the alternative.
``memory_tables`` writes any given features into the instrument's three tables (``schema/memory*.yaml``): the
endpoints matched within the tolerance of a common target, their per-domain losses and every pair's distances
(parameter distance and CKA drawn: P12 reports their means but judges only the spectra).

Scales are assumed, not measured (no real run is at hand to estimate them from): log lambda_max varying by 0.15
between seeds, log trace by 0.1, correlation 0.5. The verdict depends on them only through ``share``, the
ratio of the SDs, the correlation and the tails: R is a ratio of squared distances.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

import numpy as np
import pandas as pd

from .._profiles import PROFILES

__all__ = ["CURRICULA", "DOMAINS", "endpoints", "memory_tables"]

DOMAINS = ("technical_documentation", "poetry")  # lab:memory-lm's domain order
CURRICULA = (">".join(DOMAINS), ">".join(reversed(DOMAINS)))  # the instrument's labels: A, then its reverse
QUICK_SEEDS = PROFILES["quick"].settings["memory"]["seeds"]
TARGET, TOKENS = 2.7, (900, 758)  # memory-lm's held-out loss near its lowest (nats), tokens per domain


def endpoints(name: str, *, ratio: float = 1.0, seeds: int = QUICK_SEEDS, share: float = 0.5,
              sd: tuple[float, float] = (0.15, 0.1), correlation: float = 0.5, tails: str = "normal",
              spread_b: float = 1.0) -> Callable:
    """A simulator of the memory experiment's tables ({"memory": {memory, memory_domains, memory_pairs}}) with
    ``seeds`` seeds per curriculum and population ratio ``ratio`` (module docstring)."""
    if tails not in ("normal", "t3") or ratio < 1 or not 0 <= share <= 1:
        raise ValueError(f"tails normal or t3, ratio >= 1 and share in [0, 1], not {tails!r}, {ratio}, {share}")
    sigma = np.array([[sd[0] ** 2, correlation * sd[0] * sd[1]], [correlation * sd[0] * sd[1], sd[1] ** 2]])
    root = np.linalg.cholesky(sigma)
    vectors = np.linalg.eigh(sigma)[1]
    delta = np.sqrt((ratio - 1) * (1 + spread_b) * np.trace(sigma)) * vectors[:, -1]

    def draw(rng: np.random.Generator, scale: float) -> np.ndarray:  # [seeds, 2], covariance scale * Sigma
        if tails == "normal":
            unit = rng.standard_normal((seeds, 2))
        else:  # t3 has variance 3
            unit = rng.standard_t(3, (seeds, 2)) / np.sqrt(3)
        return np.sqrt(scale) * unit @ root.T

    def simulate(rng: np.random.Generator) -> dict:
        mu = np.log([30.0, 400.0])
        seed_part = draw(rng, share)
        za = mu + seed_part + draw(rng, 1 - share)
        zb = mu + delta + np.sqrt(spread_b) * (seed_part + draw(rng, 1 - share))
        return memory_tables(za, zb, rng)

    simulate.name = name
    return simulate


def memory_tables(za: np.ndarray, zb: np.ndarray, rng: np.random.Generator) -> dict:
    """The instrument's tables for endpoints with features ``za``, ``zb`` [seeds, 2] = (log lambda_max, log
    trace) of curricula A and B by seed; the other columns drawn about memory-lm's scales."""
    n = len(za)
    rows, domain_rows, profiles = [], [], {}
    for label, z in zip(CURRICULA, (za, zb)):
        for s in range(n):
            gap = rng.uniform(0.0, 0.03)
            lam, trace = np.exp(z[s])
            rows.append({"curriculum": label, "seed": s, "step": int(rng.integers(9, 15)) * 10,
                         "heldout_loss": TARGET + gap, "target": TARGET, "gap": gap, "matched": True,
                         "lambda_max": lam, "lambda_min": -0.02 * lam * rng.uniform(), "lambda_max_converged": True,
                         "lambda_min_converged": bool(rng.uniform() < 0.5), "trace": trace,
                         "trace_stderr": 0.05 * trace, "n_hvp": 20, "n_params": 120_000, "n_tokens": sum(TOKENS),
                         "train_wall_s": rng.uniform(8.0, 12.0)})
            profiles[label, s] = TARGET + gap + rng.normal(0.0, 0.05, len(DOMAINS))
            domain_rows += [{"curriculum": label, "seed": s, "domain": d, "loss": loss, "n_tokens": k}
                            for d, loss, k in zip(DOMAINS, profiles[label, s], TOKENS)]
    features = {(label, s): z[s] for label, z in zip(CURRICULA, (za, zb)) for s in range(n)}
    pairs = [{"curriculum_a": a[0], "seed_a": a[1], "curriculum_b": b[0], "seed_b": b[1],
              "same_curriculum": a[0] == b[0],
              "parameter_distance": (20.0 if a[1] == b[1] else 30.0) + rng.uniform(0.0, 2.0),
              "cka": min(rng.normal(0.9, 0.03), 1.0),
              "profile_distance": float(np.linalg.norm(profiles[a] - profiles[b])),
              "log_lambda_gap": abs(features[a][0] - features[b][0]),
              "log_trace_gap": abs(features[a][1] - features[b][1])}
             for a, b in combinations(features, 2)]
    return {"memory": {"memory": pd.DataFrame(rows), "memory_domains": pd.DataFrame(domain_rows),
                       "memory_pairs": pd.DataFrame(pairs)}}
