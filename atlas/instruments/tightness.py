"""Tightness: how strongly the domains' gradients compete, per layer, with the domains as loss terms.

The Framework's *loose / tight* (terrain): "competing gradient forces from different
loss terms. Loose means weak opposing forces. Tight means strong competing gradients
creating narrow stable corridors of movement" (Sener & Koltun 2018, multi-task learning
as multi-objective optimisation). Operationalised with each domain d of the corpus as
one loss term L_d, the mean over its passages of their mean NLL per token, and G_d its
gradient (``atlas.instruments._pergrad``: the mean of the passages' gradients), per block
(``model`` and each decoder layer):

    cosine(G_d, G_e)   for every pair of domains: < 0 is a conflicting pair, the
                       case PCGrad (Yu et al. 2020) projects away
    conflict_share     share of distinct pairs with cosine < 0
    mgda_norm_ratio    |sum_d w_d G_d| / |mean_d G_d| for the min-norm point w of the
                       convex hull of the G_d (MGDA, Sener & Koltun 2018 / Désidéri
                       2012): w = argmin_{w >= 0, sum w = 1} |sum_d w_d G_d|^2. 1 when
                       the domains agree (the mean is already the min-norm point);
                       0 when some convex combination cancels: a Pareto-stationary
                       point, where no step lowers every domain's loss at once (tight)

Method. Each G_d comes from batched backward passes over the domain's passages (at most
``max_tokens`` scored tokens each, BOS policy ``prepend``); the domains' gradients are
held in half precision and reduced to their Gram matrix M_de = <G_d, G_e> per block
(``_pergrad.HalfStore``: squared norms exact, cross products within 2e-4 of
|G_d||G_e|). Table ``tightness_pairs`` holds M and the cosines (pairs a <= b, the
diagonal included); the summaries compute from it: ``tightness`` per block, and
``tightness_mgda``, the min-norm weights (the QP over the simplex solved on M by SLSQP,
``scipy.optimize.minimize``, on M scaled by its trace).

Reading. These are the gradients of the passages measured, as an optimiser taking one
step on them would see them (MGDA and PCGrad act on minibatch task gradients): each
G_d carries the noise of its n_d passages, E|G_d|^2 = |true G_d|^2 + tr(Sigma_d) / n_d
(instrument ``smoothness`` measures both terms), which pulls cosines towards 0. The
domain is the unit, so there is no CI over passages here; a CI over passages would need
the gradients of every pair of passages across domains.

Cost (SmolLM2-135M, quick profile: 8 passages per domain, 64 tokens): 47 CPU seconds
on one thread under a load of 7-8 (97 s wall), about 10 s wall idle (scaled as in
``smoothness``); memory D x 2 bytes per parameter (2.2 GB for 8 domains).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from .._bounds import at_least
from .._corpus import Corpus
from .._errors import SettingsError
from .._models import LoadedModel
from .._progress import progress_bar
from ._pergrad import HalfStore, block_names, domain_gradient, domain_passages, parameters
from ._registry import instrument

__all__ = ["block_mgda", "block_tightness", "measure_tightness", "min_norm_weights"]


def min_norm_weights(gram: np.ndarray) -> np.ndarray:
    """argmin over the simplex of w^T M w (the min-norm point of the convex hull; M: [D, D] Gram) -> w [D]."""
    d = len(gram)
    m = gram / max(np.trace(gram) / d, np.finfo(float).tiny)  # conditioning only: the argmin is unchanged
    result = minimize(lambda w: w @ m @ w, np.full(d, 1.0 / d), jac=lambda w: 2 * m @ w, method="SLSQP",
                      bounds=[(0.0, 1.0)] * d, constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0,
                                                             "jac": lambda w: np.ones_like(w)}],
                      options={"ftol": 1e-14, "maxiter": 500})
    w = np.clip(result.x, 0.0, None)
    return w / w.sum()


def _grams(pairs: pd.DataFrame):
    """(block, domains, M [D, D]) for each block of a ``tightness_pairs`` table."""
    for block, g in pairs.groupby("block", sort=False):
        domains = list(dict.fromkeys([*g["domain_a"], *g["domain_b"]]))
        at = {d: k for k, d in enumerate(domains)}
        a, b = g["domain_a"].map(at).to_numpy(), g["domain_b"].map(at).to_numpy()
        m = np.zeros((len(domains), len(domains)))
        m[a, b] = m[b, a] = g["dot"].to_numpy(float)
        yield block, domains, m


def block_tightness(pairs: pd.DataFrame, *, n_resamples: int = 0, seed: int = 0) -> pd.DataFrame:
    """Per block: mean and least cosine over distinct domain pairs, conflict share, MGDA norm ratio
    (schema ``tightness``). No CI (see the module docstring); the bootstrap settings are accepted but unused."""
    rows = []
    for block, domains, m in _grams(pairs):
        norms = np.sqrt(np.diag(m))
        cosine = np.clip(m / np.outer(norms, norms), -1, 1)[np.triu_indices(len(domains), 1)]  # [D(D-1)/2]
        w = min_norm_weights(m)
        mean_sq = m.sum() / len(domains) ** 2  # |mean_d G_d|^2
        rows.append({"block": block, "n_domains": len(domains), "mean_cosine": float(cosine.mean()),
                     "min_cosine": float(cosine.min()), "conflict_share": float((cosine < 0).mean()),
                     "mgda_norm_ratio": float(np.sqrt(max(w @ m @ w, 0.0) / mean_sq)) if mean_sq > 0 else np.nan})
    return pd.DataFrame(rows, columns=["block", "n_domains", "mean_cosine", "min_cosine", "conflict_share",
                                       "mgda_norm_ratio"])


def block_mgda(pairs: pd.DataFrame, *, n_resamples: int = 0, seed: int = 0) -> pd.DataFrame:
    """Per block and domain: the domain's weight in the min-norm combination (schema ``tightness_mgda``)."""
    rows = [{"block": block, "domain": d, "weight": float(x)}
            for block, domains, m in _grams(pairs) for d, x in zip(domains, min_norm_weights(m))]
    return pd.DataFrame(rows, columns=["block", "domain", "weight"])


@instrument("tightness", version="1", measures=("tightness_pairs",),
            summaries={"tightness": block_tightness, "tightness_mgda": block_mgda}, terms=("loose_tight",))
def measure_tightness(lm: LoadedModel, corpus: Corpus, *, max_tokens: Annotated[int, at_least(1)] = 128,
                      batch_size: Annotated[int, at_least(1)] = 8, progress: bool = True) -> dict[str, pd.DataFrame]:
    """Per block, the Gram matrix and cosines of the domains' gradients (schema ``tightness_pairs``).

    Settings:
        max_tokens: scored tokens per passage (the rest of a longer passage is cut off)
        batch_size: passages per forward and backward pass
    """
    groups = domain_passages(lm, corpus, max_tokens)
    if len(groups) < 2:
        raise SettingsError(f"tightness compares the gradients of different domains and needs at least two; the corpus "
                         f"has one ({groups[0][0]}): use a corpus with several domains")
    params, layer = parameters(lm.model)
    store = HalfStore(params, layer, capacity=len(groups))
    for _, _, encoded in progress_bar(groups, desc=f"tightness {lm.name}", unit="domains", enabled=progress):
        store.add(domain_gradient(lm, encoded, params, batch_size))
    gram = store.gram(lm.n_layers)  # [1 + L, D, D]
    del store
    domains = np.array([domain for domain, _, _ in groups], dtype=object)
    a, b = np.triu_indices(len(domains))
    tables = []
    for name, m in zip(block_names(lm.n_layers), gram):
        norms = np.sqrt(np.diag(m))
        tables.append(pd.DataFrame({"block": name, "domain_a": domains[a], "domain_b": domains[b], "dot": m[a, b],
                                    "cosine": np.clip(m[a, b] / (norms[a] * norms[b]), -1.0, 1.0)}))
    return {"tightness_pairs": pd.concat(tables, ignore_index=True)}
