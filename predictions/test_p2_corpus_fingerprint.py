"""P2 — corpus fingerprint: a model's training corpus shows in which domains it finds easy.

Seed: measurements-gpt2-april-2026, Untested Predictions, Priority 2: "OPT-125M academic abstract perplexity
should be substantially lower than GPT-2's 102.5 (The Pile corpus includes academic papers)". Test: "Run
identical domain perplexity calculation on OPT-125M using same domain sentences." Criteria, fixed before data:

(a) named: PPL_academic(opt-125m) / PPL_academic(gpt2) < 0.8 on the same passages, 95% paired BCa CI below 0.8;
(b) named, tokenizer-free: the same ratio in bits per byte < 0.8.
Unit: academic_abstract passages (paired across the models), the domain the claim names; scope: this model pair.
Calibration nulls: the ratio exactly 0.8 with the other domains unmoved; power at a ratio of 0.7 (12 passages).
The general form (c) on a model pair is in test_p2c_domain_moves_most.py.
"""

import numpy as np
import pytest

from atlas import Criterion
from atlas.simulate.perplexity import BASE_LOG_PPL, DOMAINS, domain_pair, on_domains

NAMED_DOMAIN = "academic_abstract"
SOURCE = "measurements-gpt2-april-2026: Untested Predictions, Priority 2"
PAIR = ("opt-125m", "gpt2")


def _world(ratio: float, bits_per_byte: bool, name: str = ""):
    """OPT's academic NLL per token is GPT-2's plus a shift that makes the ratio (of PPL, or of bits per byte on
    the same tokenizer: OPT uses GPT-2's) ``ratio``; GPT-2 is the simulated first model, so the pair is reversed."""
    shift = (ratio - 1) * BASE_LOG_PPL[DOMAINS.index(NAMED_DOMAIN)] if bits_per_byte else np.log(ratio)
    return domain_pair(PAIR[::-1], BASE_LOG_PPL, on_domains({NAMED_DOMAIN: shift}), name)


PPL_RATIO = Criterion(
    statistic="PPL_academic(opt-125m) / PPL_academic(gpt2)", direction="<", threshold=0.8,
    ci="95% BCa bootstrap over academic_abstract passages, paired across models",
    sample="academic_abstract passages of the corpus; BOS policy prepend", unit="passages", scope="this model",
    scale="ratio")
BPB_RATIO = Criterion(
    statistic="bits-per-byte_academic(opt-125m) / bits-per-byte_academic(gpt2)", direction="<", threshold=0.8,
    ci="95% BCa bootstrap over academic_abstract passages, paired across models",
    sample="academic_abstract passages of the corpus; BOS policy prepend", unit="passages", scope="this model",
    scale="ratio")
def _academic(prediction, a, b):
    ta, tb = (prediction.evidence["perplexity", m]["perplexity"] for m in (a, b))
    if NAMED_DOMAIN not in set(ta["domain"]):
        prediction.not_run(f"the corpus has no {NAMED_DOMAIN} passages")
    rows = (ta["domain"] == NAMED_DOMAIN).to_numpy()
    return [t.loc[rows, c].to_numpy(float) for t in (ta, tb) for c in ("nll_sum", "n_tokens")]


@pytest.mark.prediction(
    id="P2a-opt-academic-perplexity", needs=("perplexity",), form="named", model=PAIR, source=SOURCE,
    nulls={"ratio exactly 0.8": _world(0.8, False)}, alternative=_world(0.7, False, "ratio 0.7"),
    claim="OPT-125M's academic-abstract perplexity is substantially (>20%) lower than GPT-2's: "
          "the Pile includes academic papers, WebText hardly any.",
    criterion=PPL_RATIO)
def test_opt_finds_academic_abstracts_easier_than_gpt2(prediction):
    nll_a, tok_a, nll_b, tok_b = _academic(prediction, *PAIR)

    def ratio(na, ta, nb, tb):
        return float(np.exp(na.sum() / ta.sum() - nb.sum() / tb.sum()))

    effect = ratio(nll_a, tok_a, nll_b, tok_b)
    ci = prediction.bootstrap((nll_a, tok_a, nll_b, tok_b), ratio, paired=True).of_unit("passages")
    prediction.conclude(effect=effect, ci=ci, n=len(nll_a), evidence={
        "ppl_opt": float(np.exp(nll_a.sum() / tok_a.sum())), "ppl_gpt2": float(np.exp(nll_b.sum() / tok_b.sum()))})


@pytest.mark.prediction(
    id="P2b-opt-academic-bits-per-byte", needs=("perplexity",), form="named", model=PAIR, source=SOURCE,
    nulls={"ratio exactly 0.8": _world(0.8, True)}, alternative=_world(0.7, True, "ratio 0.7"),
    claim="The same corpus fingerprint in bits per byte, which does not depend on the tokenizer.",
    criterion=BPB_RATIO)
def test_opt_needs_fewer_bits_per_byte_on_academic_abstracts(prediction):
    nll_a, _, nll_b, _ = _academic(prediction, *PAIR)

    def ratio(a, b):  # the bytes are the same passages' bytes: they cancel
        return float(a.sum() / b.sum())

    ci = prediction.bootstrap((nll_a, nll_b), ratio, paired=True).of_unit("passages")
    prediction.conclude(effect=ratio(nll_a, nll_b), ci=ci, n=len(nll_a))
