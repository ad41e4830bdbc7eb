"""P0 — the seed's domain perplexity map, replicated.

Seed: measurements-gpt2-april-2026, "Domain Perplexity Map" (GPT-2 small, about
five sentences per domain, one un-replicated Colab run). Perplexity is lowest on
technical documentation (19.1) and highest on academic abstracts (102.5): "5x
difference between lowest and highest", read as a corpus fingerprint of WebText.

Two forms, criteria fixed here before any data:

(a) named, on gpt2: the replicated domain perplexities rank the eight domains as
    the seed did — Spearman rho(replicated, seed) >= 0.7, judged by a 95%
    bootstrap CI (passages resampled within each domain).
(b) general, on the selected model: domains differ in perplexity — the ratio of
    the highest to the lowest domain perplexity exceeds 2; the two domains are
    picked on the point estimates, the CI resamples passages within each.
"""

import pytest

from atlas import Criterion, spearman
from atlas._stats import domain_bootstrap_ci

SEED_PPL = {  # domain id -> the seed sheet's GPT-2 small perplexity
    "technical_documentation": 19.1,
    "vernacular_dialect": 33.2,
    "tech_forum_discussion": 40.1,
    "non_western_cultural_context": 46.4,
    "literary_prose": 49.2,
    "poetry": 58.6,
    "spanish": 83.6,
    "academic_abstract": 102.5,
}

RANK_AGREEMENT = Criterion(
    statistic="Spearman rho between replicated and seed domain perplexities (8 seed domains)",
    direction=">=", threshold=0.7,
    ci="95% percentile bootstrap, passages resampled within each domain",
    sample="every seed domain present in the corpus; BOS policy prepend",
)

DOMAIN_SPREAD = Criterion(
    statistic="highest / lowest domain perplexity",
    direction=">", threshold=2.0,
    ci="95% percentile bootstrap, passages resampled within each domain; domains fixed on point estimates",
    sample="all domains of the corpus; BOS policy prepend",
)


def _domain_table(prediction):
    tables = prediction.evidence["perplexity"]
    return tables["perplexity"], tables["perplexity_domains"].set_index("domain")


@pytest.mark.prediction(
    id="P0a-seed-perplexity-map", needs=("perplexity",), form="named", model="gpt2",
    source="measurements-gpt2-april-2026: Domain Perplexity Map",
    claim="GPT-2 small ranks the eight domains as the seed sheet did (19.1 technical documentation ... "
          "102.5 academic abstracts).",
    criterion=RANK_AGREEMENT,
)
def test_gpt2_ranks_domains_as_the_seed(prediction):
    passages, domains = _domain_table(prediction)
    shared = [d for d in SEED_PPL if d in domains.index]
    if len(shared) < len(SEED_PPL):
        prediction.not_run(f"the corpus lacks seed domains {sorted(set(SEED_PPL) - set(shared))}")
    rho = spearman([domains.loc[d, "ppl"] for d in shared], [SEED_PPL[d] for d in shared])
    lo, hi = domain_bootstrap_ci(passages, lambda ppl: spearman([ppl[d] for d in shared],
                                                                [SEED_PPL[d] for d in shared]),
                                 domains=shared, n_resamples=prediction.profile.bootstrap_resamples)
    prediction.conclude(effect=rho, ci=(lo, hi), n=int(domains.loc[shared, "n"].sum()), evidence={
        "replicated_ppl": {d: round(float(domains.loc[d, "ppl"]), 3) for d in shared}, "seed_ppl": SEED_PPL})


@pytest.mark.prediction(
    id="P0b-domain-perplexity-spread", needs=("perplexity",), form="general",
    source="measurements-gpt2-april-2026: '5x difference between lowest (19.1) and highest (102.5)'",
    claim="A causal LM's perplexity differs across domains: the highest domain perplexity is more than "
          "twice the lowest.",
    criterion=DOMAIN_SPREAD,
)
def test_domain_perplexities_spread_more_than_twofold(prediction):
    passages, domains = _domain_table(prediction)
    high, low = domains["ppl"].idxmax(), domains["ppl"].idxmin()
    ratio = domains.loc[high, "ppl"] / domains.loc[low, "ppl"]
    lo, hi = domain_bootstrap_ci(passages, lambda ppl: ppl[high] / ppl[low], domains=[high, low],
                                 n_resamples=prediction.profile.bootstrap_resamples)
    prediction.conclude(effect=ratio, ci=(lo, hi), n=int(domains["n"].sum()), evidence={
        "highest": {"domain": high, "ppl": float(domains.loc[high, "ppl"])},
        "lowest": {"domain": low, "ppl": float(domains.loc[low, "ppl"])},
        "domain_ppl": {d: round(float(p), 3) for d, p in domains["ppl"].items()}})
