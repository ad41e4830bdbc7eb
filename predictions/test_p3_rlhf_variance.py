"""P3 — RLHF variance reduction: tuning flattens the domain map, most where the terrain was archaeological.

Seed: measurements-gpt2-april-2026, Untested Predictions, Priority 3: "RLHF reduces
perplexity variance, with largest reduction in archaeological domains (poetry,
academic abstracts, non-English) not laminar domains". Test: "Mistral-7B BASE vs
INSTRUCT paired comparison. If reduction is uniform or concentrated in laminar
domains, remagnetization claim is not supported."

Domain sets, fixed here: archaeological = poetry, academic_abstract, spanish (the claim's
own list); laminar = technical_documentation, vernacular_dialect, tech_forum_discussion (the
seed sheet's Laminar and Low-drag rows). Reduction in a domain = log PPL_base - log PPL_tuned,
on passages neither model trained on. (a) variance: var_domains(log PPL_tuned) -
var_domains(log PPL_base) < 0; (b) concentration: mean reduction (archaeological) - mean
reduction (laminar) > 0. Named on mistral-7b -> mistral-7b-instruct; general on --atlas-pair,
by default the offline model and its Lab fine-tune on half of every domain (domain-neutral
tuning: a difference between domains comes from the model, not from what it was tuned on).
"""

import numpy as np
import pytest

from atlas import Criterion
from atlas._evidence import judge_domain_pair

ARCHAEOLOGICAL = ("poetry", "academic_abstract", "spanish")
LAMINAR = ("technical_documentation", "vernacular_dialect", "tech_forum_discussion")
SOURCE = "measurements-gpt2-april-2026: Untested Predictions, Priority 3"
MISTRAL, LAB_PAIR = ("mistral-7b", "mistral-7b-instruct"), ("smollm2-135m-instruct", "lab:finetune-smollm2")
CI = "95% BCa bootstrap, passages resampled within each domain, paired across models"
SAMPLE = "passages neither model trained on; BOS policy prepend"
VARIANCE = Criterion("var over domains of log PPL: tuned minus base", "<", 0.0, ci=CI, sample=f"all domains; {SAMPLE}")
CONCENTRATION = Criterion("mean log-PPL reduction in archaeological domains minus that in laminar domains", ">", 0.0,
                          ci=CI, sample=f"archaeological {ARCHAEOLOGICAL}; laminar {LAMINAR}; {SAMPLE}")


def variance_change(ppl) -> float:
    base, tuned = (np.log(list(p.values())) for p in ppl)
    return float(tuned.var() - base.var())


def concentration(ppl) -> float:
    reduction = {d: np.log(ppl[0][d]) - np.log(ppl[1][d]) for d in ppl[0]}
    return float(np.mean([reduction[d] for d in ARCHAEOLOGICAL]) - np.mean([reduction[d] for d in LAMINAR]))


@pytest.mark.prediction(id="P3a-rlhf-variance-mistral", needs=("perplexity",), form="named", model=MISTRAL,
                        source=SOURCE, criterion=VARIANCE,
                        claim="Mistral-7B-Instruct's domain perplexities vary less than the base model's.")
def test_instruct_tuning_reduces_domain_variance_on_mistral(prediction):
    judge_domain_pair(prediction, variance_change)


@pytest.mark.prediction(id="P3b-rlhf-archaeological-mistral", needs=("perplexity",), form="named", model=MISTRAL,
                        source=SOURCE, criterion=CONCENTRATION,
                        claim="Mistral-7B-Instruct's perplexity drops more on archaeological domains than laminar.")
def test_instruct_tuning_reduces_archaeological_domains_most_on_mistral(prediction):
    judge_domain_pair(prediction, concentration, ARCHAEOLOGICAL + LAMINAR)


@pytest.mark.prediction(id="P3c-tuning-variance", needs=("perplexity",), form="general", model="pair",
                        default_pair=LAB_PAIR, source=SOURCE, criterion=VARIANCE,
                        claim="Tuning a causal LM reduces the variance of its log perplexity across domains.")
def test_tuning_reduces_domain_variance(prediction):
    judge_domain_pair(prediction, variance_change)


@pytest.mark.prediction(id="P3d-tuning-archaeological", needs=("perplexity",), form="general", model="pair",
                        default_pair=LAB_PAIR, source=SOURCE, criterion=CONCENTRATION,
                        claim="Tuning a causal LM lowers perplexity more on archaeological domains than on laminar.")
def test_tuning_reduces_archaeological_domains_most(prediction):
    judge_domain_pair(prediction, concentration, ARCHAEOLOGICAL + LAMINAR)
