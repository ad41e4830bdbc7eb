"""Simulated Lab runs over seed pairs: the tables of ``symmetry_orbits`` and ``algorithmic_branches``.

A claim about a training recipe ("weight matching lowers the barrier between seeds", "seeds at matched loss
compute differently") generalises over its seeds. Each pair of seeds gives one effect; pairs that share a seed
are not independent (two pairs against one reference seed share its draw), so the predictions compare disjoint
pairs, and their evidence is one instrument run per pair. A simulator here draws one effect per pair,

    effect_k = mean + spread * z_k                   (``normal_effects``: no effect at the threshold with a
                                                      between-pair spread, or the smallest effect of interest)
    effect_k = s_k * u_k, s_k = ±1, u_k ~ U(lo, hi)  (``opposite_signs``: pairs that disagree in sign, each
                                                      far from zero: the worst case for few pairs, which agree
                                                      in sign with probability 2^(1 - k))

and writes, for each pair, the instrument's tables (``schema/``) in which the statistic the prediction reads
equals that effect, plus measurement noise where the tables carry it (parts of the held-out or probe pairs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["SeedPairs", "barrier_tables", "branch_tables", "normal_effects", "opposite_signs"]

Effects = Callable[[np.random.Generator, int], np.ndarray]  # (rng, pairs) -> one effect per pair


def normal_effects(mean: float, spread: float) -> Effects:
    """Pair effects mean + spread * N(0, 1), independent across pairs."""
    return lambda rng, k: mean + spread * rng.standard_normal(k)


def opposite_signs(low: float, high: float) -> Effects:
    """Pair effects of random sign and size U(low, high): mean zero, no pair near zero."""
    return lambda rng, k: rng.choice([-1.0, 1.0], size=k) * rng.uniform(low, high, size=k)


def barrier_tables(reduction: float, rng: np.random.Generator, *, chunks: int = 8, chunk_noise: float = 0.02,
                   permutations: int = 1) -> dict[str, pd.DataFrame]:
    """``symmetry_orbits``'s tables for one seed pair whose barrier (max minus mean of the endpoints, all held-out
    pairs) falls by ``reduction`` nats after weight matching; each part of the held-out pairs adds noise."""
    before = rng.uniform(1.0, 2.0) + max(reduction, 0.0)  # nats; >= reduction, so the barrier after stays >= 0
    after = before - reduction
    distance = rng.uniform(40.0, 60.0)
    loss_model, loss_other = rng.uniform(0.005, 0.05, size=2)
    chord = abs(loss_model - loss_other) / 2  # the line's value at its maximum lies at most this far below the max
    matching = pd.DataFrame([
        {"alignment": alignment, "definition": definition, "barrier": barrier - (chord if linear else 0.0),
         "t_at_max": 0.5, "parameter_distance": distance * (1.0 if alignment == "before" else 0.8),
         "loss_model": loss_model, "loss_other": loss_other,
         "max_abs_dlogit_other": 0.0 if alignment == "before" else 1e-6, "n_pairs": 6586}
        for alignment, barrier in (("before", before), ("after", after))
        for definition, linear in (("max_minus_mean_endpoints", False), ("max_minus_linear", True))])
    parts = pd.DataFrame([
        {"alignment": row.alignment, "definition": row.definition, "chunk": c,
         "barrier": max(row.barrier + chunk_noise * rng.standard_normal(), 0.0), "n_pairs": 6586 // chunks}
        for row in matching.itertuples() for c in range(chunks)])
    orbit = pd.DataFrame({"draw": range(permutations), "family": "all", "max_abs_dlogit": 1e-6,
                          "parameter_distance": distance * rng.uniform(0.9, 1.1, permutations),
                          "weight_norm": distance * 0.8})
    return {"symmetry_orbits": orbit, "symmetry_matching": matching, "symmetry_matching_chunks": parts}


def branch_tables(difference: float, rng: np.random.Generator, *, peak: float | None = None, layers: int = 1,
                  chunks: int = 8, chunk_noise: float = 0.03, probes: int = 512) -> dict[str, pd.DataFrame]:
    """``algorithmic_branches``'s tables for one seed pair whose last-layer CKA between the seeds exceeds the mean
    of the two seeds' CKA with their own held-out loss peak (``peak``, default U(0.3, 0.6)) by ``difference``;
    adjacent checkpoints are near-copies (CKA 0.998); each part of the probe set adds noise."""
    peaks = np.full(2, peak) if peak is not None else rng.uniform(0.3, 0.6, size=2)
    cka = {"between_seeds": peaks.mean() + difference, "within_model": 0.998, "within_other": 0.998,
           "peak_model": peaks[0], "peak_other": peaks[1]}
    steps = {"between_seeds": (2450, 1850), "within_model": (2450, 2400), "within_other": (1850, 1800),
             "peak_model": (2450, 300), "peak_other": (1850, 250)}
    losses = {2450: 0.05, 2400: 0.06, 1850: 0.05, 1800: 0.07, 300: 9.0, 250: 8.5}
    rows = [{"comparison": c, "layer": layer, "step_a": steps[c][0], "step_b": steps[c][1],
             "loss_a": losses[steps[c][0]], "loss_b": losses[steps[c][1]], "target_loss": 0.05,
             "cka": float(np.clip(value, -1, 1)), "p_value": 0.005, "n": probes}
            for c, value in cka.items() for layer in range(layers)]
    parts = [{"comparison": r["comparison"], "layer": r["layer"], "chunk": c, "n": probes // chunks,
              "cka": float(np.clip(r["cka"] + chunk_noise * rng.standard_normal(), -1, 1))}
             for r in rows for c in range(chunks)]
    return {"algorithmic_branches": pd.DataFrame(rows), "algorithmic_branches_chunks": pd.DataFrame(parts)}


TABLES = {"symmetry_orbits": barrier_tables, "algorithmic_branches": branch_tables}


@dataclass(frozen=True)
class SeedPairs:
    """A simulator: one run of ``instrument`` per model of ``models`` (each a pair's first seed, the run's key),
    its tables drawn around one pair effect from ``effects``; ``name`` for ``atlas calibrate``."""

    instrument: str
    models: tuple[str, ...]
    effects: Effects
    name: str

    def __call__(self, rng: np.random.Generator) -> dict:
        drawn = self.effects(rng, len(self.models))
        return {(self.instrument, model): TABLES[self.instrument](float(effect), rng)
                for model, effect in zip(self.models, drawn)}
