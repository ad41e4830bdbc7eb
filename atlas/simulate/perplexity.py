"""Simulators of perplexity-family evidence: passages nested in domains (one model or a model pair), the
coupling of one model's layers over passages (several models), and the forgetting probe of ``elasticity``.

Every simulator is ``simulate(rng) -> {instrument: {table: DataFrame}}`` (keys ``(instrument, model)`` for
several models), its tables shaped as ``schema/perplexity*.yaml``, ``coupling_passages.yaml`` and
``elasticity.yaml``, with the structure real runs have: the starter corpus's eight domains of 12 passages,
a passage's difficulty shared by both models of a pair (the same text), a spread between domains, and a
layer profile shared by every passage of a model. Simulators carry a ``name`` (``atlas calibrate`` prints it).

Scales, from the runs the predictions were written on: a passage's mean NLL per token varies within a domain
with SD about 0.35 nats (two models on the same passage differ by about 0.1 of that); passages have 40-200
tokens; a per-passage coupling varies about its layer's mean with SD about 0.05.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from .._corpus import SEED_DOMAINS
from ..instruments.perplexity import domain_perplexity
from .domains import SUMMARY_RESAMPLES, named

__all__ = ["BASE_LOG_PPL", "DOMAINS", "coupling_by_scale", "domain_pair", "elasticity", "on_domains",
           "one_model", "tuned_pair", "tuned_worlds"]

DOMAINS = tuple(SEED_DOMAINS)  # the starter corpus's eight domains
BASE_LOG_PPL = np.log(np.geomspace(20, 100, len(DOMAINS)))  # a base model's domains: as far apart as the seed's
PASSAGES = 12  # per domain in the starter corpus
PASSAGE_SD, OWN_SD = 0.35, 0.1  # a passage's NLL per token: shared by both models of a pair; its own per model
BYTES_PER_TOKEN = 4.0
LogPPL = np.ndarray | Callable[[np.random.Generator], np.ndarray]  # per domain (in DOMAINS order), or drawn


def on_domains(values: dict[str, float]) -> np.ndarray:
    """A per-domain array (DOMAINS order): ``values`` on the domains it names, 0 elsewhere."""
    return np.array([values.get(d, 0.0) for d in DOMAINS])


def _drawn(values: LogPPL, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(values(rng) if callable(values) else values, float)


def _passages(rng: np.random.Generator) -> pd.DataFrame:
    domain = np.repeat(DOMAINS, PASSAGES)
    tokens = rng.integers(40, 201, size=len(domain))
    return pd.DataFrame({"passage_id": [f"{d}-{i % PASSAGES:02d}" for i, d in enumerate(domain)], "domain": domain,
                         "n_tokens": tokens, "n_bytes": np.round(tokens * BYTES_PER_TOKEN).astype(int),
                         "difficulty": rng.normal(0.0, PASSAGE_SD, len(domain))})


def _tables(passages: pd.DataFrame, log_ppl: np.ndarray, rng: np.random.Generator, tokens_per_byte: float) -> dict:
    """A model's ``perplexity`` and ``perplexity_domains`` tables: NLL per token = its domain's log PPL plus the
    passage's shared difficulty plus the model's own noise."""
    t = passages[["passage_id", "domain", "n_bytes"]].copy()
    t["n_tokens"] = np.maximum(1, np.round(t["n_bytes"] * tokens_per_byte)).astype(int)
    per_token = dict(zip(DOMAINS, log_ppl))
    nll = t["domain"].map(per_token) + passages["difficulty"] + rng.normal(0.0, OWN_SD, len(t))
    t["nll_sum"] = np.maximum(nll, 0.05) * t["n_tokens"]
    t["ppl"] = np.exp(t["nll_sum"] / t["n_tokens"])
    t["bits_per_byte"] = t["nll_sum"] / (np.log(2) * t["n_bytes"])
    t = t[["passage_id", "domain", "n_tokens", "n_bytes", "nll_sum", "ppl", "bits_per_byte"]]
    return {"perplexity": t, "perplexity_domains": domain_perplexity(t, n_resamples=SUMMARY_RESAMPLES)}


def one_model(log_ppl: LogPPL, name: str = "") -> Callable:
    """One model whose domains have log perplexities ``log_ppl``: {"perplexity": tables}."""
    return named(lambda rng: {"perplexity": _tables(_passages(rng), _drawn(log_ppl, rng), rng, 1 / BYTES_PER_TOKEN)},
                 name)


def domain_pair(models: tuple[str, str], base: LogPPL, change: LogPPL, name: str = "",
                tokens_per_byte: tuple[float, float] = (1 / BYTES_PER_TOKEN, 1 / BYTES_PER_TOKEN)) -> Callable:
    """Two models scored on the same passages: the second's log PPL per domain is the first's (``base``) plus
    ``change``; each model tokenizes the passages' bytes at its own rate. {("perplexity", model): tables}."""

    def simulate(rng):
        passages, first = _passages(rng), _drawn(base, rng)
        second = first + _drawn(change, rng)
        return {("perplexity", m): _tables(passages, lp, rng, tpb)
                for m, lp, tpb in zip(models, (first, second), tokens_per_byte)}

    return named(simulate, name)


def tuned_pair(models: tuple[str, str], *, variance_change: float | None = None,
               contrast: tuple[tuple[str, ...], tuple[str, ...], float] | None = None, name: str = "") -> Callable:
    """A base model and its tuned copy: each domain's log PPL moves by its own amount (mean -0.1, SD 0.1 between
    domains), then, with ``variance_change``, the tuned domains' spread is rescaled so that their variance of log
    PPL differs from the base's by exactly that; with ``contrast`` = (more, less, amount), the ``more`` domains'
    mean reduction is made to exceed the ``less`` domains' by exactly ``amount``."""
    index = {d: i for i, d in enumerate(DOMAINS)}

    def change(rng):
        tuned = BASE_LOG_PPL + rng.normal(-0.1, 0.1, len(DOMAINS))
        if variance_change is not None:
            spread = np.sqrt(BASE_LOG_PPL.var() + variance_change) / tuned.std()
            tuned = tuned.mean() + (tuned - tuned.mean()) * spread
        if contrast is not None:
            more, less = ([index[d] for d in group] for group in contrast[:2])
            reduction = BASE_LOG_PPL - tuned
            tuned[more] -= contrast[2] - (reduction[more].mean() - reduction[less].mean())
        return tuned - BASE_LOG_PPL

    return domain_pair(models, BASE_LOG_PPL, change, name)


def tuned_worlds(models: tuple[str, str], **effect) -> dict:
    """A tuned-pair prediction's calibration, for its marker: the null ``tuned_pair`` with the effect at 0 (domains
    move by their own amounts, the variance or the contrast unchanged) and the alternative at ``effect``, e.g.
    ``variance_change=-0.01`` or ``contrast=(more, less, 0.05)``."""
    (key, value), = effect.items()
    null = (*value[:2], 0.0) if key == "contrast" else 0.0
    return {"nulls": {f"{key} 0, domains move by their own amounts": tuned_pair(models, **{key: null})},
            "alternative": tuned_pair(models, **effect, name=f"{key} at the smallest effect of interest")}


def ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """A stationary AR(1) series of length ``n`` with marginal SD ``sd`` (phi = 1: a random walk of step ``sd``)."""
    steps = rng.normal(0.0, sd * np.sqrt(1 - phi**2) if phi < 1 else sd, n)
    x = np.empty(n)
    x[0] = rng.normal(0.0, sd)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + steps[i]
    return x


def coupling_by_scale(layers: dict[str, int], *, phi: float, dip: float = 0.0, name: str = "",
                      profile_sd: float = 0.05, passages_per_domain: int = 8) -> Callable:
    """Each model's ``coupling_passages`` (variant seed_flattened): a smooth profile of its own (AR(1) with
    ``phi`` over its layers, SD ``profile_sd``; phi = 1 a random walk) shared by every passage, plus ``dip`` at
    layer 4, plus each passage's own AR(1) noise over layers. {("coupling", model): {"coupling_passages"}}."""

    def simulate(rng):
        evidence = {}
        for model, n_layers in layers.items():
            profile = 0.3 + ar1(rng, n_layers, phi, profile_sd) + dip * (np.arange(n_layers) == 4)
            rows = []
            for i, domain in enumerate(np.repeat(DOMAINS, passages_per_domain)):
                value = np.clip(profile + ar1(rng, n_layers, 0.8, 0.05), -1, 1)
                rows += [{"passage_id": f"{domain}-{i:02d}", "domain": domain, "layer": layer,
                          "variant": "seed_flattened", "coupling": v, "n_pairs": 28, "n_tokens": 128}
                         for layer, v in enumerate(value)]
            evidence["coupling", model] = {"coupling_passages": pd.DataFrame(rows)}
        return evidence

    return named(simulate, name)


def elasticity(share: float, name: str = "", *, tuned: tuple[str, ...] = DOMAINS[:1], forgetting: float = 0.05,
               domain_sd: float = 0.04, noise: float = 0.01) -> Callable:
    """The forgetting probe: tuning on each ``tuned`` domain lowers its own held-out loss and raises each other
    domain's by that domain's own forgetting (mean ``forgetting``, SD ``domain_sd`` between domains: some
    forget nothing, a few gain); the EWC anchor keeps ``share`` of it, up to its own per-pair deviation
    ``noise``. {"elasticity": {"elasticity"}}."""

    def simulate(rng):
        fragility = rng.normal(forgetting, domain_sd, len(DOMAINS))  # a domain's forgetting under any tuning
        before = rng.normal(3.5, 0.5, len(DOMAINS))
        rows = []
        for t in tuned:
            for d, domain in enumerate(DOMAINS):
                none = -0.2 if domain == t else fragility[d] + rng.normal(0.0, noise)
                ewc = -0.15 if domain == t else none * (1 - share) + rng.normal(0.0, noise)
                rows += [{"tuned_domain": t, "domain": domain, "penalty": penalty, "loss_before": before[d],
                          "loss_after": before[d] + change, "change": change, "n_tokens": 1000}
                         for penalty, change in (("none", none), ("ewc", ewc))]
        return {"elasticity": {"elasticity": pd.DataFrame(rows)}}

    return named(simulate, name)
