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
"""

import numpy as np
import pytest

from atlas import Criterion, bootstrap_ci
from atlas.instruments.smoothness import pair_statistics

ARCHAEOLOGICAL = ("poetry", "academic_abstract", "spanish")
LAMINAR = ("technical_documentation", "vernacular_dialect", "tech_forum_discussion")
SOURCE = "framework-v13-terrain: smooth / abrasive; measurements-gpt2-april-2026: territories"
ROUGHER = Criterion(
    statistic="mean gradient cosine between passages (block model): laminar domains minus archaeological domains",
    direction=">", threshold=0.0, ci="95% BCa bootstrap, passages resampled within each domain (pairs of distinct "
    "passages only)", sample=f"archaeological {ARCHAEOLOGICAL}; laminar {LAMINAR}; the smoothness profile's passages")


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
    claim="Archaeological domains are abrasive terrain: their passages' gradients agree less than laminar ones'.")
def test_archaeological_domains_have_rougher_gradients(prediction):
    k = grams(prediction.evidence["smoothness"]["smoothness_gram"])
    if missing := [d for d in ARCHAEOLOGICAL + LAMINAR if d not in k]:
        prediction.not_run(f"the corpus lacks the domains {missing}")
    order = LAMINAR + ARCHAEOLOGICAL

    def contrast(*idx, axis=-1):  # idx: per domain, resampled passage numbers [..., n_d]
        cos = [pair_statistics(k[d], (np.expand_dims(i, -1) == np.arange(len(k[d]))).sum(-2))[1]
               for d, i in zip(order, idx)]
        return np.mean(cos[:3], axis=0) - np.mean(cos[3:], axis=0)

    samples = [np.arange(len(k[d])) for d in order]
    effect = float(contrast(*samples))
    ci = bootstrap_ci(samples, contrast, paired=False, n_resamples=prediction.profile.bootstrap_resamples,
                      vectorized=True)
    summary = prediction.evidence["smoothness"]["smoothness"].query("block == 'model'").set_index("domain")
    prediction.conclude(effect=effect, ci=ci, n=sum(len(s) for s in samples), evidence={
        "mean_cosine": summary.loc[list(order), "mean_cosine"].round(4).to_dict(),
        "b_simple": summary.loc[list(order), "b_simple"].round(3).fillna(-1).to_dict()})
