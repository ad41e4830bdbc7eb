"""P2 — corpus fingerprint: a model's training corpus shows in which domains it finds easy.

Seed: measurements-gpt2-april-2026, Untested Predictions, Priority 2: "OPT-125M
academic abstract perplexity should be substantially lower than GPT-2's 102.5
(The Pile corpus includes academic papers)". Test: "Run identical domain
perplexity calculation on OPT-125M using same domain sentences."

Criteria, fixed before data:

(a) named: PPL_academic(opt-125m) / PPL_academic(gpt2) < 0.8 on the same
    passages, 95% paired bootstrap CI wholly below 0.8;
(b) named, tokenizer-free: the same ratio in bits per byte < 0.8;
(c) general, for a model pair given as --atlas-pair A,B: the named domain moves
    most — log(PPL_B/PPL_A) is lower for academic_abstract than for every other
    domain (effect: the smallest other domain's log ratio minus the named
    domain's, > 0), with a CI resampling passages within domains.
"""

import numpy as np
import pytest

from atlas import Criterion
from atlas._stats import domain_bootstrap_ci

NAMED_DOMAIN = "academic_abstract"
SOURCE = "measurements-gpt2-april-2026: Untested Predictions, Priority 2"

PPL_RATIO = Criterion(
    statistic="PPL_academic(opt-125m) / PPL_academic(gpt2)", direction="<", threshold=0.8,
    ci="95% BCa bootstrap over academic_abstract passages, paired across models",
    sample="academic_abstract passages of the corpus; BOS policy prepend")
BPB_RATIO = Criterion(
    statistic="bits-per-byte_academic(opt-125m) / bits-per-byte_academic(gpt2)", direction="<", threshold=0.8,
    ci="95% BCa bootstrap over academic_abstract passages, paired across models",
    sample="academic_abstract passages of the corpus; BOS policy prepend")
MOVES_MOST = Criterion(
    statistic="min over other domains of log(PPL_B/PPL_A) minus that of academic_abstract", direction=">",
    threshold=0.0, ci="95% BCa bootstrap, passages resampled within each domain, paired across models",
    sample="all domains of the corpus; BOS policy prepend")


def _academic(prediction, a, b):
    ta, tb = (prediction.evidence["perplexity", m]["perplexity"] for m in (a, b))
    if NAMED_DOMAIN not in set(ta["domain"]):
        prediction.not_run(f"the corpus has no {NAMED_DOMAIN} passages")
    rows = (ta["domain"] == NAMED_DOMAIN).to_numpy()
    return [t.loc[rows, c].to_numpy(float) for t in (ta, tb) for c in ("nll_sum", "n_tokens")]


@pytest.mark.prediction(
    id="P2a-opt-academic-perplexity", needs=("perplexity",), form="named", model=("opt-125m", "gpt2"), source=SOURCE,
    claim="OPT-125M's academic-abstract perplexity is substantially (>20%) lower than GPT-2's: "
          "the Pile includes academic papers, WebText hardly any.",
    criterion=PPL_RATIO)
def test_opt_finds_academic_abstracts_easier_than_gpt2(prediction):
    nll_a, tok_a, nll_b, tok_b = _academic(prediction, "opt-125m", "gpt2")

    def ratio(na, ta, nb, tb):
        return float(np.exp(na.sum() / ta.sum() - nb.sum() / tb.sum()))

    effect = ratio(nll_a, tok_a, nll_b, tok_b)
    ci = prediction.bootstrap((nll_a, tok_a, nll_b, tok_b), ratio, paired=True)
    prediction.conclude(effect=effect, ci=ci, n=len(nll_a), evidence={
        "ppl_opt": float(np.exp(nll_a.sum() / tok_a.sum())), "ppl_gpt2": float(np.exp(nll_b.sum() / tok_b.sum()))})


@pytest.mark.prediction(
    id="P2b-opt-academic-bits-per-byte", needs=("perplexity",), form="named", model=("opt-125m", "gpt2"),
    source=SOURCE,
    claim="The same corpus fingerprint in bits per byte, which does not depend on the tokenizer.",
    criterion=BPB_RATIO)
def test_opt_needs_fewer_bits_per_byte_on_academic_abstracts(prediction):
    nll_a, _, nll_b, _ = _academic(prediction, "opt-125m", "gpt2")

    def ratio(a, b):  # the bytes are the same passages' bytes: they cancel
        return float(a.sum() / b.sum())

    ci = prediction.bootstrap((nll_a, nll_b), ratio, paired=True)
    prediction.conclude(effect=ratio(nll_a, nll_b), ci=ci, n=len(nll_a))


@pytest.mark.prediction(
    id="P2c-named-domain-moves-most", needs=("perplexity",), form="general", model="pair", source=SOURCE,
    claim="A model's relative ease on a domain reflects its training corpus: between two models, "
          "the domain the second's corpus adds (academic abstracts) moves most.",
    criterion=MOVES_MOST)
def test_the_named_domain_moves_most_between_a_model_pair(prediction):
    a, b = prediction.model_names
    ta, tb = (prediction.evidence["perplexity", m] for m in (a, b))
    ppl = [t["perplexity_domains"].set_index("domain")["ppl"].to_dict() for t in (ta, tb)]
    domains = list(ppl[0])
    if NAMED_DOMAIN not in domains or len(domains) < 2:
        prediction.not_run(f"the corpus needs {NAMED_DOMAIN} and at least one other domain")
    others = [d for d in domains if d != NAMED_DOMAIN]

    def gap(ppl):
        log_ratio = {d: np.log(ppl[1][d] / ppl[0][d]) for d in domains}
        return float(min(log_ratio[d] for d in others) - log_ratio[NAMED_DOMAIN])

    ci = domain_bootstrap_ci([ta["perplexity"], tb["perplexity"]], gap, domains=domains,
                             n_resamples=prediction.profile.bootstrap_resamples)
    prediction.conclude(effect=gap(ppl), ci=ci, n=len(ta["perplexity"]), evidence={
        "ppl_ratio_b_over_a": {d: ppl[1][d] / ppl[0][d] for d in domains}})
