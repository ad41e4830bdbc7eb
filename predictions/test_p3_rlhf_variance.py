"""P3 — RLHF variance reduction: tuning flattens the domain map, most where the terrain was archaeological.

Seed: measurements-gpt2-april-2026, Untested Predictions, Priority 3: "RLHF reduces
perplexity variance, with largest reduction in archaeological domains (poetry,
academic abstracts, non-English) not laminar domains". Test: "Mistral-7B BASE vs
INSTRUCT paired comparison. If reduction is uniform or concentrated in laminar
domains, remagnetization claim is not supported."

Domain sets, fixed here: archaeological = poetry, academic_abstract, spanish (the
claim's own list); laminar = technical_documentation, vernacular_dialect,
tech_forum_discussion (the seed sheet's Laminar and Low-drag rows).
Reduction in a domain = log PPL_base - log PPL_tuned. Paired over identical
passages; CIs resample passages within each domain, both models together.

(a) variance: var_domains(log PPL_tuned) - var_domains(log PPL_base) < 0;
(b) concentration: mean reduction (archaeological) - mean reduction (laminar) > 0.
Named on mistral-7b -> mistral-7b-instruct; general on --atlas-pair BASE,TUNED.
"""

import numpy as np
import pytest

from atlas import Criterion
from atlas._stats import domain_bootstrap_ci

ARCHAEOLOGICAL = ("poetry", "academic_abstract", "spanish")
LAMINAR = ("technical_documentation", "vernacular_dialect", "tech_forum_discussion")
SOURCE = "measurements-gpt2-april-2026: Untested Predictions, Priority 3"
MISTRAL = ("mistral-7b", "mistral-7b-instruct")
CI = "95% BCa bootstrap, passages resampled within each domain, paired across models"

VARIANCE = Criterion(statistic="var over domains of log PPL: tuned minus base", direction="<", threshold=0.0,
                     ci=CI, sample="all domains of the corpus; BOS policy prepend")
CONCENTRATION = Criterion(
    statistic="mean log-PPL reduction in archaeological domains minus that in laminar domains",
    direction=">", threshold=0.0, ci=CI, sample=f"archaeological {ARCHAEOLOGICAL}; laminar {LAMINAR}")


def variance_change(ppl) -> float:
    base, tuned = (np.log(list(p.values())) for p in ppl)
    return float(tuned.var() - base.var())


def concentration(ppl) -> float:
    reduction = {d: np.log(ppl[0][d]) - np.log(ppl[1][d]) for d in ppl[0]}
    return float(np.mean([reduction[d] for d in ARCHAEOLOGICAL]) - np.mean([reduction[d] for d in LAMINAR]))


def judge_pair(prediction, statistic, needed=()):
    """Measure both models on the same passages and conclude on ``statistic`` of their domain perplexities."""
    base, tuned = prediction.model_names
    tables = [prediction.evidence["perplexity", m] for m in (base, tuned)]
    ppl = [t["perplexity_domains"].set_index("domain")["ppl"].to_dict() for t in tables]
    missing = sorted(set(needed) - set(ppl[0]))
    if missing or len(ppl[0]) < 2:
        prediction.not_run(f"the corpus lacks the domains {missing or 'to compare'}")
    ci = domain_bootstrap_ci([t["perplexity"] for t in tables], statistic, domains=list(ppl[0]),
                             n_resamples=prediction.profile.bootstrap_resamples)
    prediction.conclude(effect=statistic(ppl), ci=ci, n=len(tables[0]["perplexity"]), evidence={
        "log_ppl_reduction": {d: float(np.log(ppl[0][d] / ppl[1][d])) for d in ppl[0]}})


@pytest.mark.prediction(
    id="P3a-rlhf-variance-mistral", needs=("perplexity",), form="named", model=MISTRAL, source=SOURCE,
    claim="Mistral-7B-Instruct's domain perplexities vary less than the base model's.",
    criterion=VARIANCE)
def test_instruct_tuning_reduces_domain_variance_on_mistral(prediction):
    judge_pair(prediction, variance_change)


@pytest.mark.prediction(
    id="P3b-rlhf-archaeological-mistral", needs=("perplexity",), form="named", model=MISTRAL, source=SOURCE,
    claim="Mistral-7B-Instruct's perplexity drops more on archaeological domains (poetry, "
          "academic abstracts, Spanish) than on laminar ones.",
    criterion=CONCENTRATION)
def test_instruct_tuning_reduces_archaeological_domains_most_on_mistral(prediction):
    judge_pair(prediction, concentration, ARCHAEOLOGICAL + LAMINAR)


@pytest.mark.prediction(
    id="P3c-tuning-variance", needs=("perplexity",), form="general", model="pair", source=SOURCE,
    claim="Tuning a causal LM reduces the variance of its log perplexity across domains.",
    criterion=VARIANCE)
def test_tuning_reduces_domain_variance(prediction):
    judge_pair(prediction, variance_change)


@pytest.mark.prediction(
    id="P3d-tuning-archaeological", needs=("perplexity",), form="general", model="pair", source=SOURCE,
    claim="Tuning a causal LM lowers perplexity more on archaeological domains than on laminar "
          "ones.",
    criterion=CONCENTRATION)
def test_tuning_reduces_archaeological_domains_most(prediction):
    judge_pair(prediction, concentration, ARCHAEOLOGICAL + LAMINAR)
