"""P10 — algorithmic branches: two seeds at the same loss compute differently.

Seed: framework-v13-global-geometry, Algorithmic branches: "Two checkpoint paths can converge to
similar loss and perplexity while encoding different internal computations ... representation
geometry"; branch i = {θ : L(θ) ≈ L* and A(θ) = A_i}, A e.g. a CKA cluster.

Named: the Lab's modular-addition recipe, seeds 1 and 2, each against seed 0 (two seed pairs;
instrument ``algorithmic_branches``). Matched loss: in each run the checkpoint whose held-out loss
is closest in log to the lowest held-out loss both runs reach. Representation: the residual stream
after the last decoder layer at the answer position, on 512 fixed held-out pairs. Reference for
"one computation": each seed at matched loss against its own previous checkpoint.
Criterion, fixed before the data: CKA(between seeds) - mean of the two within-seed adjacent CKAs
< 0 (debiased linear CKA), averaged over seed pairs and over 8 disjoint parts of the probe set;
95% BCa bootstrap over the parts, paired across seed pairs (the same parts for every seed). It is
refuted if the seeds are as alike as a run is to itself a moment earlier (one branch).
"""

import numpy as np
import pytest

from atlas import Criterion

RECIPE = "modular-addition"
SEEDS = (f"lab:{RECIPE}@1", f"lab:{RECIPE}@2")
OTHER = f"lab:{RECIPE}@0"
SOURCE = "framework-v13-global-geometry: Algorithmic branches"
NEEDS = {"algorithmic_branches": {"other": OTHER, "probes": 512, "chunks": 8}}
CRITERION = Criterion(
    statistic="debiased CKA between seeds at matched held-out loss minus mean within-seed adjacent-checkpoint CKA, "
              "last layer, mean over seed pairs",
    direction="<", threshold=0.0, ci="95% BCa bootstrap over 8 disjoint parts of the probe set, paired across seed "
    "pairs", sample="512 held-out pairs; residual stream at the answer position")


@pytest.mark.prediction(
    id="P10-algorithmic-branches", form="named", model=SEEDS, source=SOURCE, needs=NEEDS, criterion=CRITERION,
    claim="Two seeds trained to the same held-out loss represent the task less alike than one seed does a "
          "checkpoint apart: equal loss, different computations.")
def test_seeds_at_matched_loss_are_different_branches(prediction):
    differences, values = [], {}
    for name in prediction.model_names:
        tables = prediction.evidence["algorithmic_branches", name]
        chunks = tables["algorithmic_branches_chunks"]
        last = chunks[chunks["layer"] == chunks["layer"].max()].pivot(index="chunk", columns="comparison", values="cka")
        differences.append((last["between_seeds"] - (last["within_model"] + last["within_other"]) / 2).to_numpy())
        rows = tables["algorithmic_branches"]
        rows = rows[rows["layer"] == rows["layer"].max()].set_index("comparison")
        values[name] = {c: {"cka": round(float(r["cka"]), 4), "p_value": float(r["p_value"]),
                            "steps": [int(r["step_a"]), int(r["step_b"])],
                            "losses": [float(r["loss_a"]), float(r["loss_b"])]} for c, r in rows.iterrows()}
    ci = prediction.bootstrap(differences, lambda *d: np.mean([x.mean() for x in d]), paired=True)
    prediction.conclude(effect=float(np.mean([d.mean() for d in differences])), ci=ci, n=len(differences[0]),
                        evidence={"seed_pairs": len(differences), "other": OTHER, "last_layer": values})
