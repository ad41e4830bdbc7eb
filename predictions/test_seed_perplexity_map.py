"""P0 — the seed's domain perplexity map, replicated.

Seed: measurements-gpt2-april-2026, "Domain Perplexity Map" (GPT-2 small, about
five sentences per domain, one un-replicated Colab run). Perplexity is lowest on
technical documentation (19.1) and highest on academic abstracts (102.5): "5x
difference between lowest and highest", read as a corpus fingerprint of WebText.

Two forms, criteria fixed here before any data:

(a) named, on gpt2: the replicated perplexities rank the eight domains as the seed
    did — Spearman rho(replicated, seed) >= 0.7 (BCa CI, passages within domains).
(b) general, on the selected model: domains differ in perplexity — the ratio of
    the highest to the lowest domain perplexity exceeds 2. Picking the two domains
    on the data that test them favours the claim (at a true ratio of exactly 2 it
    came out supported 5% of the time, nominal 2.5%), so the pair is chosen on one
    half of each domain's passages and the ratio estimated on the other half.
"""

import pytest

from atlas import Criterion, spearman
from atlas._evidence import pooled_perplexity, split_halves
from atlas._stats import domain_bootstrap_ci

SEED_PPL = {  # domain id -> the seed sheet's GPT-2 small perplexity
    "technical_documentation": 19.1, "vernacular_dialect": 33.2, "tech_forum_discussion": 40.1,
    "non_western_cultural_context": 46.4, "literary_prose": 49.2, "poetry": 58.6, "spanish": 83.6,
    "academic_abstract": 102.5}

RANK_AGREEMENT = Criterion(
    statistic="Spearman rho between replicated and seed domain perplexities (8 seed domains)", direction=">=",
    threshold=0.7, ci="95% BCa bootstrap, passages resampled within each domain",
    sample="every seed domain present in the corpus; BOS policy prepend")

DOMAIN_SPREAD = Criterion(
    statistic="highest / lowest domain perplexity", direction=">", threshold=2.0, ci="95% BCa bootstrap, passages resampled within each domain, on the estimation half",
    sample="all domains of the corpus, each split in halves: the pair chosen on one, the ratio on the other; "
           "BOS policy prepend")


def _domain_table(prediction):
    tables = prediction.evidence["perplexity"]
    return tables["perplexity"], tables["perplexity_domains"].set_index("domain")


@pytest.mark.prediction(
    id="P0a-seed-perplexity-map", needs=("perplexity",), form="named", model="gpt2",
    source="measurements-gpt2-april-2026: Domain Perplexity Map",
    claim="GPT-2 small ranks the eight domains as the seed sheet did (19.1 technical documentation ... "
          "102.5 academic abstracts).",
    criterion=RANK_AGREEMENT)
def test_gpt2_ranks_domains_as_the_seed(prediction):
    passages, domains = _domain_table(prediction)
    shared = [d for d in SEED_PPL if d in domains.index]
    if len(shared) < len(SEED_PPL):
        prediction.not_run(f"the corpus lacks seed domains {sorted(set(SEED_PPL) - set(shared))}")
    rho = spearman([domains.loc[d, "ppl"] for d in shared], [SEED_PPL[d] for d in shared])
    ci = domain_bootstrap_ci(passages, lambda ppl: spearman([ppl[d] for d in shared], [SEED_PPL[d] for d in shared]),
                             domains=shared, n_resamples=prediction.profile.bootstrap_resamples)
    prediction.conclude(effect=rho, ci=ci, n=int(domains.loc[shared, "n"].sum()), evidence={
        "replicated_ppl": {d: round(float(domains.loc[d, "ppl"]), 3) for d in shared}, "seed_ppl": SEED_PPL})


@pytest.mark.prediction(
    id="P0b-domain-perplexity-spread", needs=("perplexity",), form="general",
    source="measurements-gpt2-april-2026: '5x difference between lowest (19.1) and highest (102.5)'",
    claim="A causal LM's perplexity differs across domains: the highest domain perplexity is more than "
          "twice the lowest.",
    criterion=DOMAIN_SPREAD)
def test_domain_perplexities_spread_more_than_twofold(prediction):
    passages, _ = _domain_table(prediction)
    choose, estimate = split_halves(passages)
    chosen = pooled_perplexity(choose)
    high, low = max(chosen, key=chosen.get), min(chosen, key=chosen.get)
    ppl = pooled_perplexity(estimate)
    ci = domain_bootstrap_ci(estimate, lambda p: p[high] / p[low], domains=[high, low],
                             n_resamples=prediction.profile.bootstrap_resamples)
    prediction.conclude(effect=ppl[high] / ppl[low], ci=ci, n=len(estimate), evidence={
        "highest": {"domain": high, "ppl": ppl[high]}, "lowest": {"domain": low, "ppl": ppl[low]},
        "chosen_on": len(choose), "domain_ppl_estimation_half": {d: round(v, 3) for d, v in ppl.items()}})
