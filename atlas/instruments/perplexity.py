"""Domain perplexity: how surprised a model is by each passage, summarised per domain.

The Framework's *perplexity* (navigator) and *elevation* (terrain): high perplexity
marks unmapped or contested terrain. Per passage (table ``perplexity``):

    n_tokens       scored tokens (all text tokens under BOS policy ``prepend``)
    n_bytes        UTF-8 bytes of the scored text: the whole text under ``prepend``; under
                   ``none`` without the bytes of the first, unscored token
    nll_sum        summed negative log-likelihood, nats
    ppl            exp(nll_sum / n_tokens)
    bits_per_byte  nll_sum / (ln 2 * n_bytes): comparable across tokenizers

Per domain (table ``perplexity_domains``, from ``domain_perplexity``): perplexity is
exp of the token-weighted mean NLL, with a 95% BCa bootstrap CI over passages.

A mean NLL above ln(float64 max) ≈ 709.78 nats per token has no finite perplexity
(a token probability below 1e-308: broken weights, never a language model). Such a
model is refused (``NotFinite``) rather than given an infinite perplexity, since
every stored number is finite; the pooled and resampled means of a domain never
exceed its largest passage mean, so the check on passages covers the summaries.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import torch

from .._bounds import at_least
from .._corpus import Corpus
from .._errors import NotFinite
from .._models import LoadedModel
from .._scoring import batches, encode, token_nll
from .._stats import bootstrap_ci
from .._progress import progress_bar
from ._registry import instrument

__all__ = ["measure_perplexity", "domain_perplexity"]


def _ppl(passage_id: str, nll_sum: float, n_tokens: int, model: str) -> float:
    """exp(mean NLL) of one passage; ``NotFinite`` when it leaves float64."""
    try:
        return math.exp(nll_sum / n_tokens)
    except OverflowError:
        raise NotFinite(f"model {model!r}: passage {passage_id!r} has a mean NLL of {nll_sum / n_tokens:.4g} nats per "
                        "token, whose perplexity exceeds float64 (the limit is 709.78 nats); its weights are "
                        "broken (check the checkpoint)") from None


def _pooled_ppl(nll: np.ndarray, ntok: np.ndarray) -> float:
    return float(np.exp(nll.sum() / ntok.sum()))


def domain_perplexity(passages: pd.DataFrame, *, n_resamples: int, seed: int = 0) -> pd.DataFrame:
    """Per-domain summary of a ``perplexity`` table (schema ``perplexity_domains``), domains in table order."""
    rows = []
    for domain, g in passages.groupby("domain", sort=False):
        nll, ntok = g["nll_sum"].to_numpy(float), g["n_tokens"].to_numpy(float)
        lo, hi = bootstrap_ci((nll, ntok), _pooled_ppl, paired=True, n_resamples=n_resamples, seed=seed)
        rows.append({
            "domain": domain,
            "n": len(g),
            "n_tokens": int(ntok.sum()),
            "ppl": _pooled_ppl(nll, ntok),
            "ci_low": lo,
            "ci_high": hi,
            "bits_per_byte": float(nll.sum() / (math.log(2) * g["n_bytes"].sum())),
        })
    return pd.DataFrame(rows)


@instrument("perplexity", version="2", measures=("perplexity",), summaries={"perplexity_domains": domain_perplexity},
            terms=("perplexity", "elevation"), runs_split=True)
def measure_perplexity(lm: LoadedModel, corpus: Corpus, *, bos_policy: Literal["prepend", "none"] = "prepend",
                       batch_size: Annotated[int, at_least(1)] = 8, progress: bool = True) -> dict[str, pd.DataFrame]:
    """Score every passage of the corpus; one row per passage (schema ``perplexity``).

    Settings:
        bos_policy: prepend: the document-start token is given first, every text token scored; none: the
            first token unscored, as GPT2LMHeadModel(labels=ids) does
        batch_size: passages per forward pass (numbers do not depend on it)
    """
    passages = corpus.passages
    encoded = encode(lm, [p.text for p in passages], bos_policy)
    nll_sum = [0.0] * len(passages)
    n_tokens = [0] * len(passages)
    with torch.no_grad(), progress_bar(total=len(passages), desc=f"perplexity {lm.name}", unit="passages",
                                       enabled=progress) as bar:
        for idx, ids, mask in batches(encoded, batch_size, lm.doc_start_id, lm.device):
            nll = token_nll(lm.model, ids, mask).double()  # [B, T-1]
            for row, i in enumerate(idx):
                nll_sum[i] = float(nll[row].sum())
                n_tokens[i] = len(encoded[i]) - 1
            bar.update(len(idx))
    n_bytes = [len(p.text.encode("utf-8")) - (_first_token_bytes(lm, p.text) if bos_policy == "none" else 0)
               for p in passages]
    return {"perplexity": pd.DataFrame({
        "passage_id": [p.id for p in passages],
        "domain": [p.domain for p in passages],
        "n_tokens": n_tokens,
        "n_bytes": n_bytes,
        "nll_sum": nll_sum,
        "ppl": [_ppl(p.id, s, n, lm.name) for p, s, n in zip(passages, nll_sum, n_tokens)],
        "bits_per_byte": [s / (math.log(2) * b) for s, b in zip(nll_sum, n_bytes)],
    })}



def _first_token_bytes(lm: LoadedModel, text: str) -> int:
    """UTF-8 bytes of the text the first token covers (unscored under BOS policy ``none``)."""
    encoding = lm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return len(text[: encoding["offset_mapping"][0][1]].encode("utf-8"))
