"""Elasticity: how much of what fine-tuning makes the model forget an anchor to its weights keeps.

The Framework's *elasticity* (navigator, stretchy / not-stretchy): "restoring force
toward prior weight configurations after perturbation. Catastrophic forgetting is total
loss of elasticity", with the formulas L2: λ‖θ‖² and EWC: L_total = L_task + λ Σ F_i
(θ_i - θ_i*)² (Kirkpatrick et al. 2017; Krogh & Hertz 1992). Operationalised in two parts:

* the EWC weights: the diagonal empirical Fisher F_i = mean over passages of
  (∂ℓ_p/∂θ_i)², ℓ_p a passage's mean NLL per token (``_pergrad.passage_gradients``), at
  the model as found θ*, over the first ``fisher_passages`` passages of every domain
  (the prior configuration's data: all of it). Table ``elasticity_fisher``, per block
  (``model`` and each decoder layer): the sum, mean and largest F_i;
* a forgetting probe: a copy of θ* is fine-tuned briefly on one domain t (``steps``
  full-batch gradient steps of size ``lr`` on t's Fisher passages), once plainly and
  once with the EWC anchor λ Σ F_i (θ_i - θ_i*)² (λ = ``ewc_lambda``, applied exactly
  in each step, ``atlas.instruments._descent``). Every domain's loss is measured on its
  remaining passages (held out from the Fisher and the tuning) before and after. Table
  ``elasticity``: one row per (tuned domain, domain, penalty none | ewc).

Summary ``elasticity_share`` per tuned domain: forgetting = mean loss rise over the
other domains without the anchor, forgetting_ewc with it, and the elastic share
1 - forgetting_ewc / forgetting, the part of the forgetting the restoring force removes
(0 = no elasticity, 1 = fully elastic; null when tuning made nothing worse), with a 95%
bootstrap CI (BCa) over the other domains (paired); gain and gain_ewc, the tuned
domain's own held-out loss drop, show what the anchor costs.

Scale of λ: F here is per passage of mean NLL, so it is small (SmolLM2-135M, 64 tokens:
mean 1.3e-6, median 3e-8, largest 4.2); the anchor holds coordinate i once 2 lr λ F_i
nears 1, so λ must be large (the default 1e6 with lr 0.01 holds coordinates with F_i
above about 5e-5, the top 0.1%).

Measured on SmolLM2-135M (shared corpus, 2 Fisher / tuning passages and 1 held-out
passage per domain, 128 tokens): brief tuning transfers rather than forgets. Three
steps of lr 0.01 on technical documentation lower its held-out loss by 0.13 nats and
the other domains' by 0.04 on average (one rises by 0.03), so the elastic share is null
(nothing forgotten); on poetry the same. lr 0.02 forgets mildly on technical
documentation (others +0.03) but diverges on Spanish (+4.5 nats), as lr 0.03 does on
technical documentation and poetry; three Adam steps (lr 3e-5, 1e-4) transfer too. Forgetting on this model needs
longer tuning than a quick profile affords; the tiny-model test builds a model that
forgets and checks that the anchor removes most of it.

Cost (quick profile: 3 passages per domain, 2 of them for the Fisher, 3 steps, 128
tokens, one tuned domain): 46 CPU seconds on one thread under a load of 7-8 (76 s
wall), about 10 s wall idle (scaled as in ``smoothness``).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pandas as pd
import torch

from .._bounds import above, at_least, comma_list
from .._corpus import Corpus
from .._errors import SettingsError
from .._models import LoadedModel
from .._stats import bootstrap_ci
from .._progress import progress_bar
from ._descent import Probe, start_point
from ._pergrad import block_names, domain_passages, parameters, passage_gradients
from ._registry import instrument

__all__ = ["domain_elasticity", "measure_elasticity"]

_SHARE_COLUMNS = ["tuned_domain", "n_domains", "forgetting", "forgetting_ewc", "elastic_share", "ci_low", "ci_high",
                  "gain", "gain_ewc"]


#: the ``tune_domains`` setting: first, all, or a comma list of the corpus's domains (checked by ``_tuned``)
TUNE_DOMAINS = comma_list(str, words=("first", "all"))


def _tuned(domains: list[str], tune_domains: str) -> list[str]:
    chosen = TUNE_DOMAINS.parse(tune_domains, "tune_domains")
    if chosen == "first":
        return domains[:1]
    if chosen == "all":
        return list(domains)
    if unknown := [d for d in chosen if d not in domains]:
        raise SettingsError(f"tune_domains names {unknown}, not domains of the corpus; use 'first', 'all' or a comma "
                         f"list of: {', '.join(domains)}")
    return chosen


def _elastic_share(none: np.ndarray, ewc: np.ndarray, axis: int = -1) -> np.ndarray:
    """1 - mean(ewc) / mean(none) over domains; NaN where mean(none) <= 0 (nothing forgotten)."""
    forgot, kept = np.mean(none, axis=axis), np.mean(ewc, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(forgot > 0, 1 - kept / forgot, np.nan)


def domain_elasticity(table: pd.DataFrame, *, n_resamples: int, seed: int = 0) -> pd.DataFrame:
    """Per tuned domain: forgetting with and without the anchor, the elastic share with a paired bootstrap CI
    over the other domains, and the tuned domain's own gain (schema ``elasticity_share``)."""
    rows = []
    for tuned, g in table.groupby("tuned_domain", sort=False):
        change = g.pivot(index="domain", columns="penalty", values="change")
        others = change.drop(index=tuned)
        none, ewc = others["none"].to_numpy(float), others["ewc"].to_numpy(float)
        share = float(_elastic_share(none, ewc))
        lo, hi = (bootstrap_ci((none, ewc), _elastic_share, paired=True, n_resamples=n_resamples, seed=seed,
                               vectorized=True) if np.isfinite(share) else (float("nan"), float("nan")))
        rows.append({"tuned_domain": tuned, "n_domains": len(others), "forgetting": float(none.mean()),
                     "forgetting_ewc": float(ewc.mean()), "elastic_share": share, "ci_low": lo, "ci_high": hi,
                     "gain": -float(change.loc[tuned, "none"]), "gain_ewc": -float(change.loc[tuned, "ewc"])})
    return pd.DataFrame(rows, columns=_SHARE_COLUMNS)


@instrument("elasticity", version="1", measures=("elasticity", "elasticity_fisher"),
            summaries={"elasticity_share": domain_elasticity}, terms=("elasticity",))
def measure_elasticity(lm: LoadedModel, corpus: Corpus, *, tune_domains: Annotated[str, TUNE_DOMAINS] = "first",
                       fisher_passages: Annotated[int, at_least(1)] = 2, steps: Annotated[int, at_least(1)] = 3,
                       lr: Annotated[float, above(0)] = 0.01, ewc_lambda: Annotated[float, at_least(0)] = 1e6,
                       max_tokens: Annotated[int, at_least(1)] = 128, batch_size: Annotated[int, at_least(1)] = 8, progress: bool = True) -> dict[str, pd.DataFrame]:
    """Fine-tune copies on a domain with and without the EWC anchor; every domain's held-out loss change
    (schema ``elasticity``) and the Fisher per block (schema ``elasticity_fisher``).

    Settings:
        tune_domains: the domains tuned on, each in its own probe: first, all, or a comma list of domains
        fisher_passages: each domain's leading passages for the Fisher (and, for a tuned domain, the tuning); the
            rest are held out to measure the loss change
        steps: full-batch gradient-descent steps of the tuning
        lr: the gradient-descent step size
        ewc_lambda: λ of the EWC anchor λ Σ F_i (θ_i - θ*_i)^2
        max_tokens: scored tokens per passage (the rest of a longer passage is cut off)
        batch_size: passages per forward pass
    """
    groups = domain_passages(lm, corpus, max_tokens)
    if short := [domain for domain, passages, _ in groups if len(passages) <= fisher_passages]:
        raise SettingsError(f"every domain needs more than fisher_passages={fisher_passages} passages (the rest are "
                         f"held out to measure forgetting); {', '.join(short)} {'has' if len(short) == 1 else 'have'} "
                         f"too few: lower fisher_passages or add passages")
    tuned = _tuned([domain for domain, _, _ in groups], tune_domains)
    params, layer = parameters(lm.model)
    fisher_sets = [encoded[:fisher_passages] for _, _, encoded in groups]
    n_fisher = sum(len(s) for s in fisher_sets)
    fisher = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    with progress_bar(total=n_fisher + len(tuned), desc=f"elasticity {lm.name}", unit="steps", enabled=progress) as bar:
        for encoded in fisher_sets:
            for g in passage_gradients(lm, encoded, params):
                for f, x in zip(fisher, g):
                    f.addcmul_(x, x, value=1.0 / n_fisher)
                bar.update()
        start = start_point(lm)
        anchor_weight = {name: ewc_lambda * f for name, f in zip(start, fisher)}  # λF per parameter
        held_out = {domain: Probe(lm, encoded[fisher_passages:], batch_size) for domain, _, encoded in groups}
        before = {domain: probe.loss(start) for domain, probe in held_out.items()}
        rows = []
        for t in tuned:
            tune = Probe(lm, fisher_sets[[domain for domain, _, _ in groups].index(t)], batch_size)
            for penalty, weight in (("none", None), ("ewc", anchor_weight)):
                tuned_point = tune.descend(start, steps, lr, anchor=start, anchor_weight=weight)
                for domain, probe in held_out.items():
                    after = probe.loss(tuned_point)
                    rows.append({"tuned_domain": t, "domain": domain, "penalty": penalty,
                                 "loss_before": before[domain], "loss_after": after, "change": after - before[domain],
                                 "n_tokens": probe.n_tokens})
                del tuned_point
            bar.update()
    fisher_rows = []
    for b, name in enumerate(block_names(lm.n_layers)):
        chosen = [f for f, lay in zip(fisher, layer) if b == 0 or lay == b - 1]
        n = sum(f.numel() for f in chosen)
        total = float(sum(f.double().sum() for f in chosen))
        fisher_rows.append({"block": name, "fisher_sum": total, "fisher_mean": total / n,
                            "fisher_max": float(max(f.max() for f in chosen)), "n_params": n,
                            "n_passages": n_fisher})
    return {"elasticity": pd.DataFrame(rows), "elasticity_fisher": pd.DataFrame(fisher_rows)}
