"""P14 — competing domains: archaeological gradients pull against laminar ones.

Seed: framework-v13-terrain, loose / tight ("competing gradient forces from different
loss terms"), with the domains as the loss terms and the territories of P3 / P13
(archaeological: poetry, academic abstracts, Spanish; laminar: technical documentation,
vernacular dialect, tech-forum discussion). Instrument ``tightness``, block ``model``: the
cosine between domains' mean gradients. Criterion, fixed before the data: mean cosine of
the archaeological-laminar pairs minus mean cosine of the pairs of distinct laminar
domains < 0 (archaeological domains conflict more with laminar ones than laminar domains
among themselves). The unit is the domain: the claim is about territories, three domains a
side are one draw of them, and the instrument keeps no per-passage cross terms. The interval
resamples domains within each territory (``atlas.stats.hierarchical_ci`` with no passage
stage: two of three drawn a side, the rescaled bootstrap of Rao & Wu 1988; a t interval on 4
degrees of freedom): with three a side it is wide, and honest about it. Smallest effect of
interest: 0.1 of cosine. Calibration (``atlas calibrate P14``): the null spreads the domains'
shares of a common direction (SD 0.1) and their own directions, with no territory effect
(``atlas.simulate.domains.tightness``).
"""

import numpy as np
import pytest

from atlas import Criterion
from atlas.simulate import domains
from atlas.stats import hierarchical_ci

ARCHAEOLOGICAL = ("poetry", "academic_abstract", "spanish")
LAMINAR = ("technical_documentation", "vernacular_dialect", "tech_forum_discussion")
SOURCE = "framework-v13-terrain: loose / tight; measurements-gpt2-april-2026: territories"
COMPETING = Criterion(
    statistic="mean cosine of domain mean gradients (block model): archaeological-laminar pairs minus distinct "
    "laminar pairs", direction="<", threshold=0.0,
    ci="95% t interval (4 df) of a bootstrap of domains within each territory (pairs of distinct domains only)",
    unit="domains", scope="across models", sesoi=0.1,
    sample=f"archaeological {ARCHAEOLOGICAL}; laminar {LAMINAR}; the tightness profile's passages",
    scale="difference")
NULLS = {"domains differ, territories do not": domains.tightness("domain spread, no territory effect")}
ALTERNATIVE = domains.tightness("cross-territory cosine lower by 0.1", shift=-0.1, toward=LAMINAR,
                                against=ARCHAEOLOGICAL)


@pytest.mark.prediction(
    id="P14-competing-domains", form="general", needs=("tightness",), source=SOURCE, criterion=COMPETING,
    nulls=NULLS, alternative=ALTERNATIVE,
    claim="Gradients of archaeological domains conflict more with laminar ones than laminar domains among "
          "themselves.")
def test_archaeological_gradients_conflict_with_laminar_ones(prediction):
    pairs = prediction.evidence["tightness"]["tightness_pairs"].query("block == 'model'")
    cosine = {(a, b): c for a, b, c in zip(pairs["domain_a"], pairs["domain_b"], pairs["cosine"])}
    cosine.update({(b, a): c for (a, b), c in list(cosine.items())})
    if missing := [d for d in ARCHAEOLOGICAL + LAMINAR if (d, d) not in cosine]:
        prediction.not_run(f"the corpus lacks the domains {missing}")
    c = np.array([[cosine[a, b] for b in LAMINAR + ARCHAEOLOGICAL] for a in LAMINAR + ARCHAEOLOGICAL])  # [6, 6]
    lam, arch = c[:3, :3], c[:3, 3:]

    def contrast(li, ai, axis=-1):  # resampled domain numbers [..., 3] per territory
        lc = (np.expand_dims(li, -1) == np.arange(3)).sum(-2).astype(float)  # [..., 3] counts
        ac = (np.expand_dims(ai, -1) == np.arange(3)).sum(-2).astype(float)
        cross = np.einsum("...i,ij,...j->...", lc, arch, ac) / (lc.sum(-1) * ac.sum(-1))
        distinct = lc.sum(-1) ** 2 - (lc ** 2).sum(-1)
        within = (np.einsum("...i,ij,...j->...", lc, lam, lc) - (lc ** 2) @ np.diag(lam))
        with np.errstate(invalid="ignore", divide="ignore"):
            return cross - np.where(distinct > 0, within / distinct, np.nan)

    ci = hierarchical_ci((LAMINAR, ARCHAEOLOGICAL), lambda drawn: contrast(*drawn))
    prediction.conclude(effect=float(contrast(np.arange(3), np.arange(3))), ci=ci, n=6, evidence={
        "cross_mean_cosine": round(float(arch.mean()), 4),
        "laminar_mean_cosine": round(float(lam[np.triu_indices(3, 1)].mean()), 4),
        "cosines": {f"{a}|{b}": round(float(x), 4) for (a, b), x in cosine.items() if a < b}})
