"""P13 — archaeological terrain is rougher: the hard parts leave marks in the gradients.

Seed: framework-v13-terrain, smooth / abrasive ("conflicting or noisy gradients opposing
movement"), and the measurement record's territories: the archaeological domains (poetry,
academic abstracts, Spanish) against the laminar ones (technical documentation,
vernacular dialect, tech-forum discussion; the seed sheet's Laminar and Low-drag rows, as
in P3). Instrument ``smoothness``, block ``model``: per domain, the mean cosine between
distinct passages' gradients (gradient agreement). Criterion, fixed before the data:
mean agreement over laminar domains minus that over archaeological domains > 0 (the
archaeological passages' gradients agree less). The cosine is always defined; B_simple
(the noise scale, null where a domain's signal is <= 0) is reported beside it.

Unit: domains. The claim is about territories, and three domains a side are one draw of them: domains differ
for many reasons besides their territory. The interval resamples domains within each territory, then passages
within each drawn domain (``atlas.stats.hierarchical_ci``: a t interval on 4 degrees of freedom). The old
interval held the six domains fixed and was "supported" 28-46% of the time under a modest spread between
domains and no territory effect. Smallest effect of interest: 0.05 of cosine. Calibration (``atlas calibrate
P13``): the null draws domains apart (SD 0.025) with no territory effect (``atlas.simulate.domains``).
"""

import numpy as np
import pytest

from atlas import Criterion
from atlas.instruments.smoothness import pair_statistics
from atlas.simulate import domains
from atlas.stats import hierarchical_ci, mean_difference

ARCHAEOLOGICAL = ("poetry", "academic_abstract", "spanish")
LAMINAR = ("technical_documentation", "vernacular_dialect", "tech_forum_discussion")
SOURCE = "framework-v13-terrain: smooth / abrasive; measurements-gpt2-april-2026: territories"
ROUGHER = Criterion(
    statistic="mean gradient cosine between passages (block model): laminar domains minus archaeological domains",
    direction=">", threshold=0.0, ci="95% t interval (4 df) of a two-stage bootstrap: domains within each territory, "
    "then passages within each drawn domain (pairs of distinct passages only)", unit="domains", scope="across models",
    sesoi=0.05, sample=f"archaeological {ARCHAEOLOGICAL}; laminar {LAMINAR}; the smoothness profile's passages",
    scale="difference")
NULLS = {"domains differ, territories do not": domains.smoothness("domain spread, no territory effect")}
ALTERNATIVE = domains.smoothness("archaeological agreement lower by 0.05", shift=-0.05, shifted=ARCHAEOLOGICAL)


def grams(table) -> dict[str, np.ndarray]:
    """Per domain, the Gram matrix [n, n] of its passages' whole-model gradients."""
    out = {}
    for domain, g in table[table["block"] == "model"].groupby("domain"):
        ids = list(dict.fromkeys([*g["passage_a"], *g["passage_b"]]))
        a, b = g["passage_a"].map(ids.index).to_numpy(), g["passage_b"].map(ids.index).to_numpy()
        k = np.zeros((len(ids), len(ids)))
        k[a, b] = k[b, a] = g["dot"].to_numpy(float)
        out[domain] = k
    return out


@pytest.mark.prediction(
    id="P13-archaeological-rougher", form="general", needs=("smoothness",), source=SOURCE, criterion=ROUGHER,
    nulls=NULLS, alternative=ALTERNATIVE,
    claim="Archaeological domains are abrasive terrain: their passages' gradients agree less than laminar ones'.")
def test_archaeological_domains_have_rougher_gradients(prediction):
    k = grams(prediction.evidence["smoothness"]["smoothness_gram"])
    if missing := [d for d in ARCHAEOLOGICAL + LAMINAR if d not in k]:
        prediction.not_run(f"the corpus lacks the domains {missing}")
    order = LAMINAR + ARCHAEOLOGICAL

    def cosine(domain, counts):  # mean cosine of distinct passages, weighted by how often each was drawn
        return pair_statistics(k[domain], counts)[1]

    passages = {d: len(k[d]) for d in order}
    effect = float(mean_difference([[cosine(d, np.ones(passages[d])) for d in t] for t in (LAMINAR, ARCHAEOLOGICAL)]))
    ci = hierarchical_ci((LAMINAR, ARCHAEOLOGICAL), mean_difference, value=cosine, passages=passages)
    summary = prediction.evidence["smoothness"]["smoothness"].query("block == 'model'").set_index("domain")
    prediction.conclude(effect=effect, ci=ci, n=len(order), evidence={
        "passages": sum(passages.values()), "mean_cosine": summary.loc[list(order), "mean_cosine"].round(4).to_dict(),
        "b_simple": summary.loc[list(order), "b_simple"].round(3).fillna(-1).to_dict()})
