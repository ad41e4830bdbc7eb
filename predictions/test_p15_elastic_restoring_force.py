"""P15 — elasticity: a restoring force toward the prior weights keeps part of what tuning would forget.

Seed: framework-v12-navigator, Elasticity: "restoring force toward prior weight configurations after
perturbation. Catastrophic forgetting is total loss of elasticity", formula "EWC: L_total = L_task + lambda sum F_i
(theta_i - theta_i*)^2" (chosen over flexible / stiff, which the Framework gives no formula). General form,
instrument ``elasticity``: a copy of the model is tuned briefly on a domain with and without the EWC anchor (its
diagonal Fisher on every domain's passages); every other domain's held-out loss change is the forgetting.
Criterion, fixed before the data: elastic share = 1 - mean forgetting with the anchor / mean forgetting without
it, pooled over every (tuned domain, other domain) pair of the profile, > 0. Where tuning forgot nothing the share
is undefined and the verdict inconclusive. A tuned domain whose own held-out loss did not fall under the plain
tuning did not learn (its step diverged): it is left out (added after the first run on the offline model, where 3
steps of lr 0.01 raised the tuned domain's own loss by 2.3 nats; it can only make a verdict less definite).
Unit: domains -- a domain's pairs (one per tuned domain) share its fragility, so the interval is over domains, each
with its pairs: Fieller's, as the share is a ratio. Scope: across models, judged on one ("in <model>"). Smallest
effect of interest: a share of 0.1. Calibration nulls (atlas.simulate.perplexity): the anchor restores nothing,
each domain forgetting its own amount (0.05 nats, SD 0.04 between domains; 0.01 per pair); power at a share of 0.1.
"""

import numpy as np
import pytest
from scipy import stats

from atlas import Criterion
from atlas.simulate.perplexity import DOMAINS, elasticity
from atlas.stats import Interval

SOURCE = "framework-v12-navigator: Elasticity, 'catastrophic forgetting is total loss of elasticity'; EWC"
ELASTIC = Criterion(
    statistic="elastic share 1 - mean forgetting (EWC anchor) / mean forgetting (no anchor), other domains' "
              "held-out loss rise", direction=">", threshold=0.0,
    ci="95% Fieller interval, t over the other domains (each with its pairs), paired across the two tunings",
    sample="the profile's tuned domains; every other domain's held-out passages", unit="domains",
    scope="across models", sesoi=0.1, scale="share")


def share_interval(none: np.ndarray, ewc: np.ndarray, confidence: float = 0.95) -> Interval:
    """Fieller's (1954) interval for 1 - mean(ewc) / mean(none) over k paired units, t(k - 1): exact for normal
    units where a bootstrap of a ratio over 7 domains under-covers. NaN where mean(none) is not shown above 0 at
    that level: nothing shown forgotten, no share."""
    cov, e, n = np.cov(ewc, none) / len(none), ewc.mean(), none.mean()

    def at_level(level: float) -> tuple[float, float]:
        t2 = stats.t.ppf(0.5 + level / 2, len(none) - 1) ** 2
        a, b, c = n * n - t2 * cov[1, 1], e * n - t2 * cov[0, 1], e * e - t2 * cov[0, 0]
        if n <= 0 or a <= 0 or b * b < a * c:  # no forgetting to share (tuning helped the others), or not shown
            return float("nan"), float("nan")
        return 1 - (b + np.sqrt(b * b - a * c)) / a, 1 - (b - np.sqrt(b * b - a * c)) / a

    return Interval(*at_level(confidence), unit="domains", at_level=at_level)


@pytest.mark.prediction(
    id="P15-elastic-restoring-force", form="general", needs=("elasticity",), source=SOURCE, criterion=ELASTIC,
    nulls={"no restoring force, one tuned domain": elasticity(0.0),
           "no restoring force, every domain tuned": elasticity(0.0, tuned=DOMAINS)},
    alternative=elasticity(ELASTIC.sesoi, "share 0.1"),
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
    by_domain = change.groupby(level="domain").sum()  # a domain's pairs together: the unit
    effect = 1 - ewc.mean() / none.mean() if len(none) and none.mean() > 0 else float("nan")
    ci = share_interval(by_domain["none"].to_numpy(float), by_domain["ewc"].to_numpy(float)) if len(by_domain) > 1 \
        else (float("nan"), float("nan"))
    prediction.conclude(effect=effect, ci=ci, n=len(by_domain), evidence={
        "tuned_domains": sorted(learned), "diverged": sorted(set(own.index) - learned),
        "own_change": own["change"].round(4).to_dict(),
        "forgetting": round(float(none.mean()), 5) if len(none) else None,
        "forgetting_ewc": round(float(ewc.mean()), 5) if len(none) else None,
        "by_pair": {f"{t}->{d}": [round(float(x), 4), round(float(y), 4)]
                    for (t, d), x, y in zip(change.index, none, ewc)}})
