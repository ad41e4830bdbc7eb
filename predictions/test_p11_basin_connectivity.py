"""P11 — basin connectivity: are the archaeological sinks isolated basins?

Seed: framework-v13-global-geometry, Basin connectivity, open question: "are the
archaeological sinks isolated basins or branches of a connected low-loss manifold?".
Made measurable on a base model and its tuned copy: along the straight line between
them (instrument ``interpolation``), each domain's loss L_d(t) and its barrier, the
largest height above the chord, max_t [L_d(t) - ((1 - t) L_d(0) + t L_d(1))] (Entezari et
al. 2022), over the interior points t in (0, 1): signed, so that a line that dips below the
chord on every domain (both ends in one basin) still ranks the domains. "Isolated"
predicts that reaching the tuned minimum climbs more on the archaeological domains
(poetry, academic_abstract, spanish) than on the laminar ones (technical_documentation,
vernacular_dialect, tech_forum_discussion): mean barrier
(archaeological) - mean barrier (laminar) > 0. A CI wholly below 0 refutes it; one
across 0 (e.g. every domain connected, barriers ~0) leaves it open. Pair: --atlas-pair, by
default the offline model and its Lab tune on half of every domain (recipe finetune-smollm2:
tuning that favours no domain), scored on the passages neither model trained on.

Unit: domains. "The archaeological sinks" are a territory, and three domains a side are one draw
of it: barriers differ between domains for many reasons. The interval resamples domains within
each territory, then passages within each drawn domain, every t together
(``atlas.stats.pooled_hierarchical_ci``: a t interval on 4 degrees of freedom). Smallest effect
of interest: 0.01 nats. Calibration (``atlas calibrate P11``): the null spreads the domains'
barriers (SD 0.005 nats) with no territory effect (``atlas.simulate.domains.interpolation``).
"""

import numpy as np
import pytest

from atlas import SECOND_OF_PAIR, Criterion
from atlas.evidence import pooled_perplexity, untrained
from atlas.simulate import domains
from atlas.stats import mean_difference, pooled_hierarchical_ci

ARCHAEOLOGICAL = ("poetry", "academic_abstract", "spanish")
LAMINAR = ("technical_documentation", "vernacular_dialect", "tech_forum_discussion")
LAB_PAIR = ("smollm2-135m-instruct", "lab:finetune-smollm2")
ISOLATED = Criterion(
    statistic="mean per-domain barrier (max height above the chord, interior t) of archaeological minus laminar",
    direction=">", threshold=0.0, ci="95% t interval (4 df) of a two-stage bootstrap: domains within each "
    "territory, then passages within each drawn domain, every t together", unit="domains", scope="across models",
    sesoi=0.01, sample=f"archaeological {ARCHAEOLOGICAL}; laminar {LAMINAR}; passages neither model trained on",
    scale="difference")
NULLS = {"domains differ, territories do not": domains.interpolation("domain spread, no territory effect")}
ALTERNATIVE = domains.interpolation("archaeological barriers higher by 0.01", shift=0.01, shifted=ARCHAEOLOGICAL)


def barrier(curve: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The largest height above the chord over interior t of a domain's L(t), curve [t, ...] -> [...]."""
    t = ts.reshape(-1, *[1] * (curve.ndim - 1))
    return np.max((curve - ((1 - t) * curve[:1] + t * curve[-1:]))[(ts > 0) & (ts < 1)], axis=0)


@pytest.mark.prediction(
    id="P11-archaeological-basins-isolated", form="general", model="pair", default_pair=LAB_PAIR, criterion=ISOLATED,
    nulls=NULLS, alternative=ALTERNATIVE, needs={"interpolation": {"other": SECOND_OF_PAIR}},
    source="framework-v13-global-geometry: Basin connectivity, open question",
    claim="The archaeological sinks are isolated basins: between a model and its tuned copy, the straight "
          "path climbs a higher barrier on archaeological domains than on laminar ones.")
def test_archaeological_domains_sit_behind_higher_barriers(prediction):
    passages = prediction.evidence["interpolation"]["interpolation_passages"]
    passages = untrained(passages, prediction)
    ts = np.sort(passages["t"].unique())
    tables = [passages[passages["t"] == t].reset_index(drop=True) for t in ts]  # same passages, same order
    if missing := sorted(set(ARCHAEOLOGICAL + LAMINAR) - set(tables[0]["domain"])):
        prediction.not_run(f"the held-out passages lack the domains {missing}")
    ci = pooled_hierarchical_ci(tables, lambda curve: barrier(curve, ts), (ARCHAEOLOGICAL, LAMINAR))
    ppl = [pooled_perplexity(t) for t in tables]
    b = {d: float(barrier(np.log([at[d] for at in ppl]), ts)) for d in ppl[0]}
    prediction.conclude(effect=float(mean_difference([[b[d] for d in ARCHAEOLOGICAL], [b[d] for d in LAMINAR]])),
                        ci=ci, n=6, evidence={"barrier": {d: round(v, 5) for d, v in b.items()}, "t": ts.tolist(),
                                              "passages": len(tables[0])})
