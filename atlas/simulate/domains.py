"""Simulators of evidence whose passages are nested in domains: the tables the territory claims read (P3d, P11,
P13, P14), drawn with a spread **between domains** as well as noise between passages.

A territory claim ("archaeological domains are rougher than laminar ones") generalises over domains: one corpus
is one draw of them, and a domain differs from another for many reasons besides its territory. Each simulator
draws every domain's own level around a common one (SD ``domain_sd``: the spread between domains), adds
``shift`` to the domains in ``shifted`` (the territory effect: 0 under the null), and draws each domain's
passages around its level. The null of every territory claim is ``shift=0``: domains differ, territories do
not. The alternative is ``shift`` at the claim's smallest effect of interest.

Every simulator is ``simulator(name, **model) -> simulate`` with ``simulate(rng) -> {instrument: {table:
DataFrame}}`` (keys ``(instrument, model)`` for a model pair), its tables shaped as the instrument's own
(``schema/``; the summaries are the instruments' own summary functions), and carries ``name`` (what ``atlas
calibrate`` prints). Domains are the starter corpus's eight; passage ids ``<domain>-s<i>``.

Scales. The defaults are assumed, not measured (no real run of these instruments on several models exists to
estimate a spread between domains from): a level between the extremes the instruments report, a domain SD
about half the smallest effect of interest each prediction declares, passage noise larger than the domain SD.
Pass others to see how a verdict's calibration moves with them.

    perplexity_pair(name, models, *, shift=0.0, shifted=(), reduction=0.1, domain_sd=0.03, passages=6)
    smoothness(name, *, shift=0.0, shifted=(), level=0.2, domain_sd=0.025, passage_sd=0.1, passages=8)
    tightness(name, *, shift=0.0, toward=(), against=(), alignment=0.3, domain_sd=0.1, lift=0.0, lifted=())
    interpolation(name, *, shift=0.0, shifted=(), barrier=-0.005, domain_sd=0.005, passage_sd=0.01, passages=6)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from .._corpus import SEED_DOMAINS
from ..instruments.interpolation import interpolation_barrier
from ..instruments.perplexity import domain_perplexity
from ..instruments.smoothness import domain_smoothness
from ..instruments.tightness import block_mgda, block_tightness

__all__ = ["DOMAINS", "interpolation", "named", "perplexity_pair", "smoothness", "tightness"]

DOMAINS = tuple(SEED_DOMAINS)  # the starter corpus's eight domains, in corpus order
#: the seed sheet's GPT-2 perplexities (schema/reference), as each domain's common log PPL
SHEET_LOG_PPL = np.log([19.1, 33.2, 40.1, 46.4, 49.2, 58.6, 83.6, 102.5])
SUMMARY_RESAMPLES = 50  # the summaries' own CIs: no territory claim reads them


def _levels(rng: np.random.Generator, common: float, domain_sd: float, shift: float,
            shifted: Sequence[str]) -> np.ndarray:
    """Each domain's level: the common one, its own deviation (SD ``domain_sd``), and ``shift`` if in ``shifted``."""
    return common + rng.normal(0.0, domain_sd, len(DOMAINS)) + shift * np.isin(DOMAINS, shifted)


def named(simulate: Callable, name: str) -> Callable:
    """``simulate`` with the ``name`` calibrate reports it by (a null's is its key in the marker's ``nulls``)."""
    simulate.name = name
    return simulate


def perplexity_pair(name: str, models: tuple[str, str], *, shift: float = 0.0, shifted: Sequence[str] = (),
                    reduction: float = 0.1, domain_sd: float = 0.03, passages: int = 6, passage_sd: float = 0.35,
                    own_sd: float = 0.07) -> Callable:
    """A base model and its tuned copy scored on the same held-out passages (``passages`` a domain: the quick
    profile's 12, less the half the Lab pair tuned on): {("perplexity", model): {perplexity,
    perplexity_domains}}. A passage's NLL per token is its domain's log PPL (the seed sheet's) plus its own
    difficulty (SD ``passage_sd``, shared by both models: the same text) plus each model's own noise (SD
    ``own_sd``); the tuned copy lowers each domain's by its own reduction (``reduction``, SD ``domain_sd``
    between domains, plus ``shift`` on ``shifted``)."""

    def simulate(rng):
        domain = np.repeat(DOMAINS, passages)
        tokens = rng.integers(40, 201, len(domain))
        base = np.repeat(SHEET_LOG_PPL, passages) + rng.normal(0.0, passage_sd, len(domain))
        drop = np.repeat(_levels(rng, reduction, domain_sd, shift, shifted), passages)
        evidence = {}
        for model, per_token in zip(models, (base, base - drop)):
            nll = np.maximum(per_token + rng.normal(0.0, own_sd, len(domain)), 0.05) * tokens
            table = pd.DataFrame({"passage_id": [f"{d}-s{i % passages}" for i, d in enumerate(domain)],
                                  "domain": domain, "n_tokens": tokens, "n_bytes": tokens * 4, "nll_sum": nll,
                                  "ppl": np.exp(nll / tokens), "bits_per_byte": nll / (np.log(2) * tokens * 4)})
            evidence["perplexity", model] = {"perplexity": table, "perplexity_domains": domain_perplexity(
                table, n_resamples=SUMMARY_RESAMPLES)}
        return evidence

    return named(simulate, name)


def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    v = rng.normal(size=shape)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def smoothness(name: str, *, shift: float = 0.0, shifted: Sequence[str] = (), level: float = 0.2,
               domain_sd: float = 0.025, passage_sd: float = 0.1, passages: int = 8, dim: int = 256) -> Callable:
    """Per-passage gradients of each domain (block ``model``): {"smoothness": {smoothness_gram, smoothness}}.
    A domain's gradient agreement rho_d is ``level`` plus its own deviation (SD ``domain_sd``) plus ``shift`` on
    ``shifted``; a passage's rho_i varies about it (SD ``passage_sd``, kept in [0.01, 0.95]), and its gradient is
    s_i (sqrt(rho_i) e_d + sqrt(1 - rho_i) z_i), e_d the domain's common direction, z_i a random unit vector in
    ``dim`` dimensions, s_i a log-normal size: the cosine of two passages is about sqrt(rho_i rho_j)."""

    def simulate(rng):
        rows = []
        for domain, rho_d in zip(DOMAINS, _levels(rng, level, domain_sd, shift, shifted)):
            rho = np.clip(rho_d + rng.normal(0.0, passage_sd, passages), 0.01, 0.95)[:, None]
            g = np.exp(rng.normal(0.0, 0.3, (passages, 1))) * (np.sqrt(rho) * _unit(rng, dim)
                                                               + np.sqrt(1 - rho) * _unit(rng, passages, dim))
            k = g @ g.T
            a, b = np.triu_indices(passages)
            rows.append(pd.DataFrame({"domain": domain, "block": "model", "passage_a": [f"{domain}-s{i}" for i in a],
                                      "passage_b": [f"{domain}-s{j}" for j in b], "dot": k[a, b]}))
        gram = pd.concat(rows, ignore_index=True)
        return {"smoothness": {"smoothness_gram": gram,
                               "smoothness": domain_smoothness(gram, n_resamples=SUMMARY_RESAMPLES)}}

    return named(simulate, name)


def tightness(name: str, *, shift: float = 0.0, toward: Sequence[str] = (), against: Sequence[str] = (),
              alignment: float = 0.3, domain_sd: float = 0.1, lift: float = 0.0, lifted: Sequence[str] = (),
              dim: int = 64) -> Callable:
    """The domains' mean gradients (block ``model``): {"tightness": {tightness_pairs, tightness, tightness_mgda}}.
    G_d = sqrt(a_d) c + s_d sqrt(gamma) t + sqrt(1 - a_d - |s_d| gamma) f_d, with c a direction common to all
    domains, a_d its share (``alignment``, SD ``domain_sd`` between domains, plus ``lift`` on ``lifted``; in
    [0.02, 0.9]), f_d the domain's
    own random direction in ``dim`` dimensions, and a territory direction t that ``toward`` domains follow (s_d
    = 1) and ``against`` domains oppose (s_d = -1), gamma = |shift| / 2: a pair on one side gains about gamma of
    cosine, a pair across loses it, so (cross minus within one side) is about -|shift|. Norms vary (log-normal)."""

    def simulate(rng):
        gamma = abs(shift) / 2
        side = np.isin(DOMAINS, toward).astype(float) - np.isin(DOMAINS, against)
        share = np.clip(_levels(rng, alignment, domain_sd, lift, lifted), 0.02, 0.9 - gamma)[:, None]
        c, t = np.linalg.qr(rng.normal(size=(dim, 2)))[0].T
        g = (np.sqrt(share) * c + (side * np.sqrt(gamma))[:, None] * t
             + np.sqrt(1 - share - np.abs(side)[:, None] * gamma) * _unit(rng, len(DOMAINS), dim))
        g *= np.exp(rng.normal(0.0, 0.3, (len(DOMAINS), 1)))
        m = g @ g.T
        norms = np.sqrt(np.diag(m))
        a, b = np.triu_indices(len(DOMAINS))
        pairs = pd.DataFrame({"block": "model", "domain_a": np.array(DOMAINS)[a], "domain_b": np.array(DOMAINS)[b],
                              "dot": m[a, b], "cosine": np.clip(m[a, b] / (norms[a] * norms[b]), -1, 1)})
        return {"tightness": {"tightness_pairs": pairs, "tightness": block_tightness(pairs),
                              "tightness_mgda": block_mgda(pairs)}}

    return named(simulate, name)


def interpolation(name: str, *, shift: float = 0.0, shifted: Sequence[str] = (), barrier: float = -0.005,
                  domain_sd: float = 0.005, passage_sd: float = 0.01, passages: int = 6, points: int = 5,
                  tokens: int = 16) -> Callable:
    """The line from a model to its tuned copy: {"interpolation": {interpolation, interpolation_passages,
    interpolation_barrier}}. A passage's NLL per token along t is its start (its domain's log PPL, from the seed
    sheet, plus its difficulty, SD 0.35), falling linearly by its own tuning gain (about 0.1), plus a bump
    4 t (1 - t) h_i, h_i its domain's height (``barrier``, SD ``domain_sd`` between domains, plus ``shift`` on
    ``shifted``) plus its own (SD ``passage_sd``), plus a little noise at each t (SD 0.002); ``tokens`` scored
    tokens a passage (the quick profile's 16), ``passages`` held-out passages a domain, ``points`` values of t."""

    def simulate(rng):
        ts = np.linspace(0.0, 1.0, points)[:, None]
        domain = np.repeat(DOMAINS, passages)
        start = np.repeat(SHEET_LOG_PPL, passages) + rng.normal(0.0, 0.35, len(domain))
        gain = rng.normal(0.1, 0.05, len(domain))
        height = np.repeat(_levels(rng, barrier, domain_sd, shift, shifted), passages)
        height = height + rng.normal(0.0, passage_sd, len(domain))
        loss = start - ts * gain + 4 * ts * (1 - ts) * height + rng.normal(0.0, 0.002, (points, len(domain)))
        ids = [f"{d}-s{i % passages}" for i, d in enumerate(domain)]
        rows = pd.DataFrame({"t": np.repeat(ts[:, 0], len(domain)), "passage_id": np.tile(ids, points),
                             "domain": np.tile(domain, points), "nll_sum": np.maximum(loss, 0.05).ravel() * tokens,
                             "n_tokens": tokens})
        curve = rows.groupby("t", as_index=False)[["nll_sum", "n_tokens"]].sum()
        line = pd.DataFrame({"t": curve["t"], "loss": curve["nll_sum"] / curve["n_tokens"],
                             "n_tokens": curve["n_tokens"]})
        line["linear"] = (1 - line["t"]) * line["loss"].iloc[0] + line["t"] * line["loss"].iloc[-1]
        line["excess"] = line["loss"] - line["linear"]
        return {"interpolation": {"interpolation": line[["t", "loss", "linear", "excess", "n_tokens"]],
                                  "interpolation_passages": rows,
                                  "interpolation_barrier": interpolation_barrier(line)}}

    return named(simulate, name)
