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
"""

import numpy as np
import pytest

from atlas import SECOND_OF_PAIR, Criterion
from atlas._evidence import pooled_perplexity, untrained
from atlas._stats import domain_bootstrap_ci

ARCHAEOLOGICAL = ("poetry", "academic_abstract", "spanish")
LAMINAR = ("technical_documentation", "vernacular_dialect", "tech_forum_discussion")
LAB_PAIR = ("smollm2-135m-instruct", "lab:finetune-smollm2")
ISOLATED = Criterion(
    statistic="mean per-domain barrier (max height above the chord, interior t) of archaeological minus laminar",
    direction=">", threshold=0.0, ci="95% BCa bootstrap, passages resampled within each domain, every t together",
    sample=f"archaeological {ARCHAEOLOGICAL}; laminar {LAMINAR}; passages neither model trained on")


def barriers(losses, ts) -> dict[str, float]:
    """{domain: barrier} from one {domain: exp(L_d(t))} per t."""
    curve = {d: np.log([at[d] for at in losses]) for d in losses[0]}
    inside = (ts > 0) & (ts < 1)
    return {d: float(np.max((L - ((1 - ts) * L[0] + ts * L[-1]))[inside])) for d, L in curve.items()}


@pytest.mark.prediction(
    id="P11-archaeological-basins-isolated", form="general", model="pair", default_pair=LAB_PAIR, criterion=ISOLATED,
    needs={"interpolation": {"other": SECOND_OF_PAIR}},
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

    def contrast(losses) -> float:
        b = barriers(losses, ts)
        return float(np.mean([b[d] for d in ARCHAEOLOGICAL]) - np.mean([b[d] for d in LAMINAR]))

    ci = domain_bootstrap_ci(tables, contrast, domains=list(ARCHAEOLOGICAL + LAMINAR),
                             n_resamples=prediction.profile.bootstrap_resamples)
    ppl = [pooled_perplexity(t) for t in tables]
    prediction.conclude(effect=contrast(ppl), ci=ci, n=len(tables[0]), evidence={
        "barrier": {d: round(v, 5) for d, v in barriers(ppl, ts).items()}, "t": ts.tolist()})
