"""P9 — symmetry orbits: far apart in weights, one function; and seeds closer once permutations are undone.

Seed: framework-v13-global-geometry, Symmetry orbits: "Permuting neurons ... can move the model
far in parameter space while leaving behavior unchanged. Distance in parameter space is not
distance in function space without accounting for symmetry orbits first" (Entezari et al. 2022;
Ainsworth et al. 2022).

Named: the Lab's modular-addition recipe, seeds 1 and 2, each with seed 0 as the other model
(two seed pairs; instrument ``symmetry_orbits``, permutations of every family together).
(a) A permuted copy is on the orbit when max |Δlogit| <= 1e-4 on the probe pairs and its distance
    from the model is at least half the distance between the two seeds. Criterion: the share of
    random permutations on the orbit > 0.9, by its exact (Clopper-Pearson) 95% interval over
    permutations (24 per model: 48 draws, whose interval can clear 0.9 only if none fails).
(b) Weight matching lowers the barrier: barrier before - barrier after alignment
    (max_t L(t) - (L_A + L_B)/2 on held-out pairs), averaged over seed pairs and over 8 disjoint
    parts of the held-out pairs, > 0.01 nats (a lowering, not rounding); 95% BCa bootstrap over the
    parts, paired across seed pairs (the same parts for every seed). The height above the chord is
    reported beside it.
"""

import numpy as np
import pytest
from scipy import stats

from atlas import Criterion

RECIPE = "modular-addition"
SEEDS = (f"lab:{RECIPE}@1", f"lab:{RECIPE}@2")
OTHER = f"lab:{RECIPE}@0"
SOURCE = "framework-v13-global-geometry: Symmetry orbits"
NEEDS = {"symmetry_orbits": {"other": OTHER, "permutations": 24, "families": "all", "chunks": 8}}
SAME_FUNCTION, COMPARABLE = 1e-4, 0.5
ON_ORBIT = Criterion(
    statistic="share of random permutations with max |Δlogit| <= 1e-4 and distance >= 0.5 x the seeds' distance",
    direction=">", threshold=0.9, ci="95% exact (Clopper-Pearson) interval over permutations",
    sample="24 permutations of every family together per model; the profile's probe pairs")
LOWER_BARRIER = Criterion(
    statistic="barrier before minus after weight matching (max minus mean of endpoints, nats), mean over seed pairs",
    direction=">", threshold=0.01, ci="95% BCa bootstrap over 8 disjoint parts of the held-out pairs, paired across "
    "seed pairs", sample="all held-out pairs of the run's split")


@pytest.mark.prediction(
    id="P9a-permutation-orbit", form="named", model=SEEDS, source=SOURCE, needs=NEEDS, criterion=ON_ORBIT,
    claim="Permuting a transformer's units moves it as far as another seed lies, without changing its function.")
def test_permuted_models_are_the_same_function_far_away(prediction):
    on_orbit, ratios = [], []
    for name in prediction.model_names:
        tables = prediction.evidence["symmetry_orbits", name]
        orbit = tables["symmetry_orbits"].query("family == 'all'")
        seeds = tables["symmetry_matching"].query("alignment == 'before'")["parameter_distance"].iloc[0]
        ratios += list(orbit["parameter_distance"] / seeds)
        on_orbit += list((orbit["max_abs_dlogit"] <= SAME_FUNCTION) & (orbit["parameter_distance"] >= COMPARABLE * seeds))
    k, n = int(np.sum(on_orbit)), len(on_orbit)
    ci = stats.binomtest(k, n).proportion_ci(method="exact")
    prediction.conclude(effect=k / n, ci=(ci.low, ci.high), n=n, evidence={
        "on_orbit": k, "distance_ratio_min": float(np.min(ratios)), "distance_ratio_median": float(np.median(ratios))})


@pytest.mark.prediction(
    id="P9b-matching-lowers-barrier", form="named", model=SEEDS, source=SOURCE, needs=NEEDS, criterion=LOWER_BARRIER,
    claim="Aligning one seed to another by weight matching lowers the loss barrier on the line between them.")
def test_weight_matching_lowers_the_barrier_between_seeds(prediction):
    reductions, whole = [], {}
    for name in prediction.model_names:
        tables = prediction.evidence["symmetry_orbits", name]
        chunks = tables["symmetry_matching_chunks"].pivot_table(index=["definition", "chunk"], columns="alignment",
                                                                values="barrier")
        reductions.append((chunks["before"] - chunks["after"]).loc["max_minus_mean_endpoints"].to_numpy())
        whole[name] = tables["symmetry_matching"].set_index(["definition", "alignment"])[
            ["barrier", "parameter_distance"]].round(4).reset_index().to_dict("records")
    ci = prediction.bootstrap(reductions, lambda *r: np.mean([x.mean() for x in r]), paired=True)
    prediction.conclude(effect=float(np.mean([r.mean() for r in reductions])), ci=ci, n=len(reductions[0]),
                        evidence={"seed_pairs": len(reductions), "other": OTHER, "matching": whole})
