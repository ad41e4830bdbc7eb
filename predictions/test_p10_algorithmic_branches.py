"""P10 — algorithmic branches: two seeds at the same loss compute differently.

Seed: framework-v13-global-geometry, Algorithmic branches: "Two checkpoint paths can converge to
similar loss and perplexity while encoding different internal computations ... representation
geometry"; branch i = {θ : L(θ) ≈ L* and A(θ) = A_i}, A e.g. a CKA cluster.

Named: the Lab's modular-addition recipe, seeds 0-9 as five disjoint pairs (0, 1), (2, 3), ...
(instrument ``algorithmic_branches`` on each pair's first seed towards its second). Matched loss: in
each run the checkpoint whose held-out loss is closest in log to the lowest held-out loss both runs
reach. Representation: the residual stream after the last decoder layer at the answer position, on
512 fixed held-out pairs; debiased linear CKA. Reference, a known change of computation: each seed at
matched loss against its own checkpoint of highest held-out loss before it (grokking's memorisation
peak: the training pairs learnt by a lookup, the held-out ones not; Nanda et al. 2023). An adjacent
checkpoint would be a near-copy (CKA ~ 0.998), against which any two seeds differ. Per pair: CKA
between the seeds - mean of the two seeds' CKA with their own peak. Criterion, fixed before the data:
the mean over pairs < 0, by its 95% Student-t interval over the pairs (4 df; seeds are the unit, no
seed in two pairs); smallest effect of interest 0.05. Refuted when two seeds at matched loss are more
alike than one seed before and after it learns the held-out pairs: one computation, not branches.
Why five pairs and what they cost: see P9 (the same seeds, pairs and Lab cache).
"""

import numpy as np
import pytest

from atlas import SECOND_OF_PAIR, Criterion
from atlas.simulate.seeds import SeedPairs, normal_effects, opposite_signs
from atlas.stats import t_interval

RECIPE = "modular-addition"
SEEDS = tuple(f"lab:{RECIPE}@{seed}" for seed in range(10))  # pairs (0, 1), (2, 3), ...: (A1, B1, A2, B2, ...)
SOURCE = "framework-v13-global-geometry: Algorithmic branches"
NEEDS = {"algorithmic_branches": {"other": SECOND_OF_PAIR}}
SESOI = 0.05
CRITERION = Criterion(
    statistic="debiased CKA between seeds at matched held-out loss minus mean CKA of each seed with its own "
              "held-out loss peak, last layer, mean over seed pairs",
    direction="<", threshold=0.0, ci="95% Student-t interval over disjoint seed pairs",
    sample="512 held-out pairs; residual stream at the answer position", unit="seeds", scope="across seeds",
    sesoi=SESOI, scale="difference")
FIRSTS = SEEDS[::2]
NULLS = {null.name: null for null in (
    SeedPairs("algorithmic_branches", FIRSTS, normal_effects(0.0, 0.1), "no effect, seed-pair spread 0.1 CKA"),
    SeedPairs("algorithmic_branches", FIRSTS, opposite_signs(0.1, 0.2), "opposite-sign seed pairs, |effect| 0.1-0.2"))}
ALTERNATIVE = SeedPairs("algorithmic_branches", FIRSTS, normal_effects(-SESOI, SESOI / 2),
                        "mean -0.05 CKA (the SESOI), seed-pair spread 0.025")


@pytest.mark.prediction(
    id="P10-algorithmic-branches", form="named", model=SEEDS, source=SOURCE, needs=NEEDS, criterion=CRITERION,
    nulls=NULLS, alternative=ALTERNATIVE,
    claim="Two seeds trained to the same held-out loss represent the task less alike than one seed does before "
          "and after it learns the held-out pairs: equal loss, different computations.")
def test_seeds_at_matched_loss_are_different_branches(prediction):
    pairs = {}
    for first, second in zip(prediction.model_names[::2], prediction.model_names[1::2]):
        rows = prediction.evidence["algorithmic_branches", first]["algorithmic_branches"]
        last = rows[rows["layer"] == rows["layer"].max()].set_index("comparison")
        peak = last.loc[["peak_model", "peak_other"], "cka"].mean()  # the two seeds' own change of computation
        pairs[f"{first} vs {second}"] = {"difference": float(last.loc["between_seeds", "cka"] - peak), **{
            c: {"cka": round(float(r["cka"]), 4), "p_value": float(r["p_value"]),
                "steps": [int(r["step_a"]), int(r["step_b"])]} for c, r in last.iterrows()}}
    differences = [p["difference"] for p in pairs.values()]
    prediction.conclude(effect=float(np.mean(differences)), ci=t_interval(differences, unit="seeds"),
                        n=2 * len(differences), evidence={"seed_pairs": pairs, "pairs": len(differences)})
