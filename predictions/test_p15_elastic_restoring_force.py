"""P15 — elasticity: a restoring force toward the prior weights keeps part of what tuning would forget.

Seed: framework-v12-navigator, Elasticity: "restoring force toward prior weight
configurations after perturbation. Catastrophic forgetting is total loss of elasticity",
formula "EWC: L_total = L_task + lambda sum F_i (theta_i - theta_i*)^2". Chosen over
flexible / stiff because the Framework gives elasticity a formula (EWC) and names what a
reader should expect of it, while the terrain text gives flexible / stiff neither a
formula nor its name. General form, instrument ``elasticity``: a copy of the model is
tuned briefly on a domain with and without the EWC anchor (its diagonal Fisher on every
domain's passages); every other domain's held-out loss change is the forgetting.
Criterion, fixed before the data: elastic share = 1 - mean forgetting with the anchor /
mean forgetting without it, pooled over every (tuned domain, other domain) pair of the
profile, > 0. Where tuning forgot nothing (mean forgetting <= 0) the share is undefined
and the verdict inconclusive: there was nothing for a restoring force to restore. A tuned
domain whose own held-out loss did not fall under the plain tuning did not learn (its step
diverged): what it did to the others is not forgetting, so it is left out (guard added
after the first run on the offline model, where 3 steps of lr 0.01 on the starter corpus
raised the tuned domain's own loss by 2.3 nats; it can only make a verdict less definite).
"""

import numpy as np
import pytest

from atlas import Criterion, bootstrap_ci

SOURCE = "framework-v12-navigator: Elasticity, 'catastrophic forgetting is total loss of elasticity'; EWC"
ELASTIC = Criterion(
    statistic="elastic share 1 - mean forgetting (EWC anchor) / mean forgetting (no anchor), other domains' "
              "held-out loss rise", direction=">", threshold=0.0,
    ci="95% BCa bootstrap over (tuned domain, other domain) pairs, paired across the two tunings",
    sample="the profile's tuned domains; every other domain's held-out passages")


def share(none, ewc, axis=-1):
    forgot = np.mean(none, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(forgot > 0, 1 - np.mean(ewc, axis=axis) / forgot, np.nan)


@pytest.mark.prediction(
    id="P15-elastic-restoring-force", form="general", needs=("elasticity",), source=SOURCE, criterion=ELASTIC,
    claim="Anchoring a causal LM to its prior weights by their Fisher (EWC) removes part of the forgetting that "
          "tuning on one domain causes on the others.")
def test_the_ewc_anchor_restores_part_of_what_tuning_forgets(prediction):
    table = prediction.evidence["elasticity"]["elasticity"]
    own = table[(table["tuned_domain"] == table["domain"]) & (table["penalty"] == "none")].set_index("domain")
    learned = set(own.index[own["change"] < 0])  # tuned domains whose plain tuning lowered their own loss
    others = table[(table["tuned_domain"] != table["domain"]) & table["tuned_domain"].isin(learned)]
    change = others.pivot_table(index=["tuned_domain", "domain"], columns="penalty", values="change").reindex(
        columns=["none", "ewc"])
    none, ewc = change["none"].to_numpy(float), change["ewc"].to_numpy(float)
    effect = float(share(none, ewc)) if len(none) else float("nan")
    ci = (bootstrap_ci((none, ewc), share, paired=True, n_resamples=prediction.profile.bootstrap_resamples,
                       vectorized=True) if np.isfinite(effect) else (float("nan"), float("nan")))
    prediction.conclude(effect=effect, ci=ci, n=len(none), evidence={
        "tuned_domains": sorted(learned), "diverged": sorted(set(own.index) - learned),
        "own_change": own["change"].round(4).to_dict(),
        "forgetting": round(float(none.mean()), 5) if len(none) else None,
        "forgetting_ewc": round(float(ewc.mean()), 5) if len(none) else None,
        "by_pair": {f"{t}->{d}": [round(float(x), 4), round(float(y), 4)]
                    for (t, d), x, y in zip(change.index, none, ewc)}})
