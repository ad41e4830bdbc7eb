"""P3 — RLHF variance reduction: tuning flattens the domain map, most where the terrain was archaeological.

Seed: measurements-gpt2-april-2026, Untested Predictions, Priority 3: "RLHF reduces perplexity variance, with
largest reduction in archaeological domains (poetry, academic abstracts, non-English) not laminar domains". Test:
"Mistral-7B BASE vs INSTRUCT paired comparison. If reduction is uniform or concentrated in laminar domains,
remagnetization claim is not supported." Archaeological = poetry, academic_abstract, spanish (the claim's list);
laminar = technical_documentation, vernacular_dialect, tech_forum_discussion (the seed's Laminar and Low-drag rows).
Reduction in a domain = log PPL_base - log PPL_tuned, on passages neither model trained on. (a) variance:
var_domains(log PPL_tuned) - var_domains(log PPL_base) < 0; (b) concentration: mean reduction (archaeological) -
mean reduction (laminar) > 0. Named on mistral-7b -> mistral-7b-instruct; general on --atlas-pair, by default the
offline model and its Lab fine-tune on half of every domain (domain-neutral: differences come from the model).
Units: (a, b) the sheet's claim on a named pair's named domains and (c) on one pair's fixed domains ("in <pair>")
sample passages (calibration: tuned_worlds); (d) claims territories, three domains a side one draw of them: domains
resampled in each territory, then passages in each (t, 4 df). SESOI 0.01 nats^2 (a, c), 0.05 nats (b, d)."""

import numpy as np
import pytest

from atlas import Criterion
from atlas.evidence import judge_domain_pair
from atlas.simulate import domains
from atlas.simulate.perplexity import tuned_worlds

ARCHAEOLOGICAL = ("poetry", "academic_abstract", "spanish")
LAMINAR = ("technical_documentation", "vernacular_dialect", "tech_forum_discussion")
SOURCE = "measurements-gpt2-april-2026: Untested Predictions, Priority 3"
MISTRAL, LAB_PAIR = ("mistral-7b", "mistral-7b-instruct"), ("smollm2-135m-instruct", "lab:finetune-smollm2")
CI = "95% BCa bootstrap, passages resampled within each domain, paired across models"
SAMPLE = "passages neither model trained on; BOS policy prepend"
VARIANCE = Criterion("var over domains of log PPL: tuned minus base", "<", 0.0, ci=CI, sample=f"all domains; {SAMPLE}",
                     sesoi=0.01, scale="difference")
CONCENTRATION = Criterion("mean log-PPL reduction in archaeological domains minus that in laminar domains", ">", 0.0,
                          ci=CI, sample=f"archaeological {ARCHAEOLOGICAL}; laminar {LAMINAR}; {SAMPLE}", sesoi=0.05,
                          scale="log_ratio")
TERRITORIES = Criterion(CONCENTRATION.statistic, ">", 0.0, ci="95% t interval (4 df) of a two-stage bootstrap: "
                        "domains within each territory, then passages within each drawn domain, paired across models",
                        sample=CONCENTRATION.sample, unit="domains", scope="across models", sesoi=0.05,
                        scale="log_ratio")
NULLS = {"domains differ, territories do not": domains.perplexity_pair("no territory effect", LAB_PAIR)}
ALTERNATIVE = domains.perplexity_pair("archaeological drop 0.05 larger", LAB_PAIR, shift=0.05, shifted=ARCHAEOLOGICAL)


def variance_change(ppl) -> float:
    base, tuned = (np.log(list(p.values())) for p in ppl)
    return float(tuned.var() - base.var())


def concentration(ppl) -> float:
    reduction = {d: np.log(ppl[0][d]) - np.log(ppl[1][d]) for d in ppl[0]}
    return float(np.mean([reduction[d] for d in ARCHAEOLOGICAL]) - np.mean([reduction[d] for d in LAMINAR]))


@pytest.mark.prediction(id="P3a-rlhf-variance-mistral", needs=("perplexity",), form="named", model=MISTRAL,
                        source=SOURCE, criterion=VARIANCE, **tuned_worlds(MISTRAL, variance_change=-0.01),
                        claim="Mistral-7B-Instruct's domain perplexities vary less than the base model's.")
def test_instruct_tuning_reduces_domain_variance_on_mistral(prediction):
    judge_domain_pair(prediction, variance_change)


@pytest.mark.prediction(id="P3b-rlhf-archaeological-mistral", needs=("perplexity",), form="named", model=MISTRAL,
                        source=SOURCE, criterion=CONCENTRATION,
                        **tuned_worlds(MISTRAL, contrast=(ARCHAEOLOGICAL, LAMINAR, 0.05)),
                        claim="Mistral-7B-Instruct's perplexity drops more on archaeological domains than laminar.")
def test_instruct_tuning_reduces_archaeological_domains_most_on_mistral(prediction):
    judge_domain_pair(prediction, concentration, ARCHAEOLOGICAL + LAMINAR)


@pytest.mark.prediction(id="P3c-tuning-variance", needs=("perplexity",), form="general", model="pair",
                        default_pair=LAB_PAIR, source=SOURCE, **tuned_worlds(LAB_PAIR, variance_change=-0.01),
                        criterion=Criterion(**{**VARIANCE.as_dict(), "scope": "across models"}),
                        claim="Tuning a causal LM reduces the variance of its log perplexity across domains.")
def test_tuning_reduces_domain_variance(prediction):
    judge_domain_pair(prediction, variance_change)


@pytest.mark.prediction(id="P3d-tuning-archaeological", needs=("perplexity",), form="general", model="pair",
                        default_pair=LAB_PAIR, source=SOURCE, criterion=TERRITORIES, nulls=NULLS,
                        alternative=ALTERNATIVE,
                        claim="Tuning a causal LM lowers perplexity more on archaeological domains than on laminar.")
def test_tuning_reduces_archaeological_domains_most(prediction):
    judge_domain_pair(prediction, concentration, ARCHAEOLOGICAL + LAMINAR, territories=(ARCHAEOLOGICAL, LAMINAR),
                      value=lambda log_ppl: log_ppl[0] - log_ppl[1])
