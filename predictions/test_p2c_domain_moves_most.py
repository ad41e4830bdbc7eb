"""P2c — corpus fingerprint, general form: the domain a model's corpus adds is the domain that moves most.

Seed: measurements-gpt2-april-2026, Untested Predictions, Priority 2 (OPT-125M's Pile adds
academic papers to what GPT-2's WebText had). General form, on a model pair A, B whose
second corpus adds academic abstracts: log(PPL_B / PPL_A) is lower for academic_abstract
than for every other domain. Effect: the smallest other domain's log ratio minus the named
domain's (> 0 supports), on passages neither model trained on, with a CI resampling passages
within domains. Pair: --atlas-pair, by default the offline model and its Lab copy tuned on
half of the starter corpus's academic abstracts only (recipe finetune-smollm2-academic):
the added domain is known by construction, the comparison uses the other half, and a
tuning that moved every domain alike, or moved another domain most, refutes the claim.

Unit: passages, resampled within each domain: the domains are the corpus's fixed set and the claim is about which
of them moves most; scope: across model pairs, judged on one ("in <pair>"). Smallest effect of interest: 0.05
nats, a domain moving 5% further in perplexity than the next. Calibration null: the other domains move by their
own amounts (log ratio -0.1, SD 0.1 between domains) and the named domain exactly as far as the furthest of them;
power with it 0.05 further.
"""

import numpy as np
import pytest

from atlas import Criterion
from atlas.evidence import judge_domain_pair
from atlas.simulate.perplexity import BASE_LOG_PPL, DOMAINS, domain_pair

NAMED_DOMAIN = "academic_abstract"
SOURCE = "measurements-gpt2-april-2026: Untested Predictions, Priority 2"
LAB_PAIR = ("smollm2-135m-instruct", "lab:finetune-smollm2-academic")
MOVES_MOST = Criterion(
    statistic="min over other domains of log(PPL_B/PPL_A) minus that of academic_abstract", direction=">",
    threshold=0.0, ci="95% BCa bootstrap, passages resampled within each domain, paired across models",
    sample="all domains of the corpus, passages neither model trained on; BOS policy prepend", unit="passages",
    scope="across models", sesoi=0.05, scale="log_ratio")


def _moves(beyond: float, name: str = ""):
    """A pair whose named domain moves ``beyond`` further than the furthest of the others (their own draws)."""
    def change(rng):
        others = rng.normal(-0.1, 0.1, len(DOMAINS))
        return np.where(np.array(DOMAINS) == NAMED_DOMAIN, others[np.array(DOMAINS) != NAMED_DOMAIN].min() - beyond,
                        others)
    return domain_pair(LAB_PAIR, BASE_LOG_PPL, change, name)


def gap(ppl) -> float:
    log_ratio = {d: np.log(ppl[1][d] / ppl[0][d]) for d in ppl[0]}
    return float(min(v for d, v in log_ratio.items() if d != NAMED_DOMAIN) - log_ratio[NAMED_DOMAIN])


@pytest.mark.prediction(
    id="P2c-named-domain-moves-most", needs=("perplexity",), form="general", model="pair", default_pair=LAB_PAIR,
    source=SOURCE, criterion=MOVES_MOST, nulls={"moves as far as the furthest other": _moves(0.0)},
    alternative=_moves(MOVES_MOST.sesoi, "0.05 further"),
    claim="A model's relative ease on a domain reflects its training corpus: between two models, "
          "the domain the second's corpus adds (academic abstracts) moves most.")
def test_the_named_domain_moves_most_between_a_model_pair(prediction):
    judge_domain_pair(prediction, gap, (NAMED_DOMAIN,))
