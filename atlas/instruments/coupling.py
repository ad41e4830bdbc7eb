"""Inter-head coupling: how alike the heads of one layer attend, per layer (an attention probe).

The Framework's *coupling* (navigator) is the off-diagonal Hessian between parameters; the
seed measured a behavioural proxy, the correlation of heads' attention maps, and so does
this instrument (the Hessian itself between heads: ``head_hessian``). Heads that attend
alike move together, so a tightly coupled layer behaves like fewer, wider heads.

The causal mask makes the seed's proxy an artifact. Row i of every causal map spreads a
total weight of 1 over i + 1 keys, so every head, whatever it computes, shares the same
row profile 1/(i + 1): large values early, small ones late. Correlating maps flattened
over the lower triangle (the seed's method) correlates any two heads through that shared
profile. On independent random maps (softmax of N(0, s^2) logits, 300 draws each) the
flattened correlation averages 0.49 at T = 16 and 0.44 at T = 128 for s = 1 (near-uniform
rows, as in a model at initialisation: tiny random models give 0.9998) and 0.19 / 0.075
for s = 3; a head and its row-permuted twin (each row's weights shuffled among its keys,
so nothing but the row profile is shared) give 0.11 on average.

Method, per passage (document-start token first, at most ``max_tokens`` tokens, eager
attention) and per layer. The default family, ``row_centred``, compares heads row by row:
each query row of each head is centred on its own mean (with the sink column that mean
is exactly the uniform baseline 1/(i + 1)), two heads' rows are Pearson-correlated, and
the rows are averaged with weights equal to their number of keys (a row's share of the
map), over rows with at least 3 keys (a 2-key row's centred correlation is always +-1)
and in which neither head is constant (``row_pair_matrix``). On the same random maps it
averages -0.0015 to 0.0003 (sd 0.09 at T = 16, 0.011 at T = 128), a copy gives 1, a
row-permuted twin -0.0002 on average. The seed's family, ``seed_flattened``, is kept as
the reference record's method (``head_pair_matrix``): each map flattened over the causal
lower triangle (i >= j), one Pearson correlation per head pair. Per family, the layer's
coupling is the mean over distinct head pairs. Variants (column ``variant``):

    row_centred, seed_flattened          every key
    *_no_sink                            without key j = 0, the document-start token most
                                         heads park attention on (the attention sink),
                                         which couples heads trivially
    *_cross_kv                           grouped-query attention only: just the pairs of
                                         heads that read different KV heads (pairs sharing
                                         keys are coupled by construction)

A head with no defined correlation (constant over the entries compared, e.g. a head that
puts every weight on the sink) leaves its pairs out, and ``n_pairs`` counts the pairs
averaged. A (passage, layer, variant) with no defined pair is left out of the table, with
a warning. Passages are batched with right padding, but each passage's numbers come from
its own unpadded T x T block, so batching changes no number.

Summary (table ``coupling``, from ``layer_coupling``): per layer and variant, the mean
over passages with a 95% BCa bootstrap CI over passages.
"""

from __future__ import annotations

import warnings
from typing import Annotated

import numpy as np
import pandas as pd
import torch

from .._anatomy import attention, decoder_layers, eager_attention, hooks, kv_groups
from .._bounds import at_least
from .._corpus import Corpus
from .._models import LoadedModel
from .._scoring import batches, encode
from .._stats import bootstrap_ci
from .._progress import progress_bar
from ._registry import instrument

__all__ = ["DEFAULT_VARIANT", "head_pair_matrix", "layer_coupling", "measure_coupling", "row_pair_matrix",
           "shared_kv_pairs"]

DEFAULT_VARIANT = "row_centred"
MIN_KEYS = 3  # rows with fewer keys are left out of row_centred: a 2-key row correlates +-1 whatever the heads


CONSTANT = 1e-9  # a variance below this share of the sum of squares is a constant map (or row): no correlation


def _row_moments(attn: torch.Tensor, sink: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per query row, over the keys compared: the heads' dot products [..., T, H, H], sums [..., T, H] and the
    number of keys [T]. Both families are read from these (one product of the maps, no centred copies).

    attn: [..., H, T, T] (query i, key j), each map causal (zero above the diagonal)."""
    x = attn.double()
    if not sink:
        x = x.clone()
        x[..., 0] = 0.0
    t = attn.shape[-1]
    keys = torch.arange(1, t + 1, device=attn.device) - (0 if sink else 1)  # [T]: keys of row i
    dot = torch.einsum("...hij,...gij->...ihg", x, x)  # [..., T, H, H]
    return dot, x.sum(-1).transpose(-1, -2), keys  # sums: [..., T, H]


def _correlation(cov: torch.Tensor, squares: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pearson r from a covariance matrix [..., H, H] (symmetrised, clamped to [-1, 1]) and which heads are
    constant [..., H] (variance below ``CONSTANT`` times their sum of squares ``squares``)."""
    cov = (cov + cov.transpose(-1, -2)) / 2  # exactly symmetric
    var = cov.diagonal(dim1=-2, dim2=-1)  # [..., H]
    constant = var <= CONSTANT * squares
    sd = var.clamp(min=0).sqrt()
    with torch.no_grad():
        corr = (cov / (sd[..., :, None] * sd[..., None, :])).clamp(-1.0, 1.0)
    return corr, constant


def head_pair_matrix(attn: torch.Tensor, sink: bool = True) -> torch.Tensor:
    """Pearson correlations between heads' attention maps flattened over the causal lower triangle.

    attn: [..., H, T, T] (query i, key j)  ->  [..., H, H], float64, symmetric, in [-1, 1].
    ``sink=False`` leaves out key column j = 0. Entries involving a head whose map is
    constant over those positions (correlation undefined) are NaN, its diagonal too;
    every other diagonal entry is 1.
    """
    return _flattened(*_row_moments(attn, sink))


def _flattened(dot: torch.Tensor, sums: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    total, count = sums.sum(-2), keys.sum().double()  # [..., H], entries compared
    squares = dot.sum(-3)  # [..., H, H]
    corr, constant = _correlation(squares - total[..., :, None] * total[..., None, :] / count,
                                  squares.diagonal(dim1=-2, dim2=-1))
    corr = corr.clone()
    corr.diagonal(dim1=-2, dim2=-1).fill_(1.0)
    return corr.masked_fill(constant[..., :, None] | constant[..., None, :], float("nan"))


def row_pair_matrix(attn: torch.Tensor, sink: bool = True) -> torch.Tensor:
    """Key-weighted mean over query rows of the Pearson correlation between heads' rows.

    attn: [..., H, T, T] (query i, key j)  ->  [..., H, H], float64, symmetric, in [-1, 1].
    Rows with fewer than ``MIN_KEYS`` keys, and a head's rows that are constant, are left out;
    a pair with no row left is NaN (its diagonal too). ``sink=False`` leaves out key j = 0.
    """
    return _rows(*_row_moments(attn, sink))


def _rows(dot: torch.Tensor, sums: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``row_pair_matrix`` from the row moments: [..., T, H, H], [..., T, H], [T]."""
    k = keys.double().clamp(min=1)[:, None, None]  # [T, 1, 1]
    per_row, constant = _correlation(dot - sums[..., :, None] * sums[..., None, :] / k,
                                     dot.diagonal(dim1=-2, dim2=-1))  # [..., T, H, H], [..., T, H]
    rows = ~constant & (keys >= MIN_KEYS)[:, None]  # [..., T, H]
    weight = keys.double()[:, None, None] * (rows[..., :, None] & rows[..., None, :])  # [..., T, H, H]
    total = weight.sum(-3)  # [..., H, H]
    corr = (per_row.nan_to_num() * weight).sum(-3) / total  # NaN where no row is defined
    eye = torch.eye(corr.shape[-1], dtype=torch.bool, device=corr.device)
    return torch.where(eye & (total > 0), 1.0, corr.clamp(-1.0, 1.0))


def shared_kv_pairs(n_heads: int, groups: int) -> torch.Tensor:
    """[H, H] bool: True where two query heads read the same KV head (h // groups)."""
    kv = torch.arange(n_heads) // groups
    return kv.unsqueeze(0) == kv.unsqueeze(1)


def _pair_masks(n_heads: int, groups: int, device) -> dict[str, torch.Tensor]:
    """Which (h, k) pairs, h < k, each variant family averages over: [H, H] bool."""
    distinct = torch.ones(n_heads, n_heads, dtype=torch.bool).triu(1)
    masks = {"": distinct}
    if groups > 1 and n_heads // groups > 1:  # grouped-query with at least two KV heads
        masks["_cross_kv"] = distinct & ~shared_kv_pairs(n_heads, groups)
    return {k: m.to(device) for k, m in masks.items()}


def _attention_maps(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Every layer's attention weights for a batch: [B, L, H, T, T] (eager attention).

    Each attention module returns (output, weights); a forward hook per layer keeps
    the weights and is removed afterwards. This is what ``output_attentions=True``
    does, except that transformers 5 leaves its capturing hooks installed on the
    model for good, which would leave the model changed.
    """
    captured: list[torch.Tensor] = []

    def keep(_module, _args, output):
        captured.append(output[1])  # the attention weights [B, H, T, T]

    with hooks(*[(attention(model, layer), "forward", keep) for layer in range(len(decoder_layers(model)))]):
        model(input_ids=ids, attention_mask=mask)
    return torch.stack([w.to(ids.device) for w in captured], dim=1)  # a split model's layers: on several devices


def layer_coupling(passages: pd.DataFrame, *, n_resamples: int, seed: int = 0) -> pd.DataFrame:
    """Per layer and variant: mean coupling over passages, 95% bootstrap CI (schema ``coupling``)."""
    rows = []
    for (layer, variant), g in passages.groupby(["layer", "variant"], sort=False):
        values = g["coupling"].to_numpy(float)
        lo, hi = bootstrap_ci((values,), np.mean, paired=False, n_resamples=n_resamples, seed=seed)
        rows.append({"layer": int(layer), "variant": variant, "coupling": float(values.mean()),
                     "ci_low": lo, "ci_high": hi, "n_passages": len(values)})
    return (pd.DataFrame(rows, columns=["layer", "variant", "coupling", "ci_low", "ci_high", "n_passages"])
            .sort_values("layer", kind="stable").reset_index(drop=True))


def _variant_rows(passage, n_tokens: int, corr: torch.Tensor, prefix: str, pairs: dict) -> list[dict]:
    """Table rows of one passage and family: per layer and pair set, the mean over pairs with a defined value."""
    out = []
    for suffix, chosen in pairs.items():
        values = corr[:, chosen]  # [L, P]
        counts = (~values.isnan()).sum(-1)  # [L]: pairs with a defined correlation
        means = values.nan_to_num().sum(-1) / counts.clamp(min=1)  # [L]
        out += [{"passage_id": passage.id, "domain": passage.domain, "layer": layer, "variant": prefix + suffix,
                 "coupling": mean, "n_pairs": count, "n_tokens": n_tokens}
                for layer, (count, mean) in enumerate(zip(counts.tolist(), means.tolist())) if count]
    return out


_FAMILIES = {"row_centred": _rows, "seed_flattened": _flattened}  # each from the row moments
_SINKS = ((True, ""), (False, "_no_sink"))


@instrument("coupling", version="2", measures=("coupling_passages",), summaries={"coupling": layer_coupling},
            terms=("coupling",), runs_split=True)
def measure_coupling(lm: LoadedModel, corpus: Corpus, *, max_tokens: Annotated[int, at_least(2)] = 128,
                     batch_size: Annotated[int, at_least(1)] = 8, progress: bool = True) -> dict[str, pd.DataFrame]:
    """Per passage, layer and variant, the mean head-pair correlation (schema ``coupling_passages``).

    Settings:
        max_tokens: tokens of each passage fed (its opening), the document-start token included
        batch_size: passages per forward pass (numbers do not depend on it)
    """
    passages = corpus.passages
    encoded = [ids[:max_tokens] for ids in encode(lm, [p.text for p in passages], "prepend")]
    pairs = _pair_masks(lm.n_heads, kv_groups(lm.model), lm.device)
    rows: list[list[dict]] = [[] for _ in passages]
    with torch.no_grad(), eager_attention(lm.model), progress_bar(total=len(passages), desc=f"coupling {lm.name}",
                                                                  unit="passages", enabled=progress) as bar:
        for idx, ids, mask in batches(encoded, batch_size, lm.doc_start_id, lm.device):
            maps = _attention_maps(lm.model, ids, mask)  # [B, L, H, T, T]
            for row, i in enumerate(idx):
                n = len(encoded[i])
                block = maps[row, :, :, :n, :n]  # [L, H, n, n], this passage alone
                for sink, sink_suffix in _SINKS:
                    moments = _row_moments(block, sink)  # one product of the maps serves both families
                    for family, pair_matrix in _FAMILIES.items():
                        rows[i] += _variant_rows(passages[i], n, pair_matrix(*moments), family + sink_suffix, pairs)
            bar.update(len(idx))
    dropped = sum(len(pairs) * lm.n_layers * len(_SINKS) * len(_FAMILIES) - len(r) for r in rows)
    if dropped:
        warnings.warn(f"coupling: {dropped} (passage, layer, variant) cells had no head pair with a defined "
                      "correlation (every head's map constant) and were left out of the table", RuntimeWarning,
                      stacklevel=2)
    return {"coupling_passages": pd.DataFrame([r for passage_rows in rows for r in passage_rows], columns=[
        "passage_id", "domain", "layer", "variant", "coupling", "n_pairs", "n_tokens"])}

