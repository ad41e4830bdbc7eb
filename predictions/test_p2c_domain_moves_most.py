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
"""

import numpy as np
import pytest

from atlas import Criterion
from atlas._evidence import judge_domain_pair

NAMED_DOMAIN = "academic_abstract"
SOURCE = "measurements-gpt2-april-2026: Untested Predictions, Priority 2"
LAB_PAIR = ("smollm2-135m-instruct", "lab:finetune-smollm2-academic")
MOVES_MOST = Criterion(
    statistic="min over other domains of log(PPL_B/PPL_A) minus that of academic_abstract", direction=">",
    threshold=0.0, ci="95% BCa bootstrap, passages resampled within each domain, paired across models",
    sample="all domains of the corpus, passages neither model trained on; BOS policy prepend")


def gap(ppl) -> float:
    log_ratio = {d: np.log(ppl[1][d] / ppl[0][d]) for d in ppl[0]}
    return float(min(v for d, v in log_ratio.items() if d != NAMED_DOMAIN) - log_ratio[NAMED_DOMAIN])


@pytest.mark.prediction(
    id="P2c-named-domain-moves-most", needs=("perplexity",), form="general", model="pair", default_pair=LAB_PAIR,
    source=SOURCE, criterion=MOVES_MOST,
    claim="A model's relative ease on a domain reflects its training corpus: between two models, "
          "the domain the second's corpus adds (academic abstracts) moves most.")
def test_the_named_domain_moves_most_between_a_model_pair(prediction):
    judge_domain_pair(prediction, gap, (NAMED_DOMAIN,))
