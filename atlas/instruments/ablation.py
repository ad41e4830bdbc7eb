"""Single-head ablation: what each attention head carries, found by removing it (Michel et al. 2019).

The Framework's *coupling* and *viscosity*: a head whose removal barely moves
perplexity is loosely coupled to the computation, and the model flows around the
gap (low viscosity); a head whose removal raises perplexity sharply is load-bearing.
The seed's prediction: heads of the most coupled layers (GPT-2 layers 9-10) should
resist ablation more than those of layers 0-2.

Method. Every head of every layer is ablated on its own by a *gate* on the input of
its layer's attention output projection (head h owns columns h*head_dim:(h+1)*head_dim
of that [B, T, n_heads * head_dim] input; transformers 5 has no ``head_mask``), and
the data are scored again. The scan is fast because ablating a head of layer l
cannot change layers 0..l-1: one baseline forward per batch records every decoder
layer's input and keyword arguments (mask, rotary embeddings...), and each ablation
runs only layers l..L-1 from that record, then the final norm and the output
embeddings, with ``heads_per_pass`` ablations side by side as replicas of the batch.
Batches hold passages of similar length (at most ``batch_size``, and at most 10%
padding: a pass computes every padded position of every layer above l).
Importance is Michel's I_h: the mean over passages of |dL_passage / d gate_h| at all
gates 1, L_passage the passage's mean NLL per token (one backward per batch, with a
gate per passage so that the gradients stay separate).

Data: ``atlas._scoring.budgeted``: passages with the domains taking turns, BOS policy
``prepend``, at most ``tokens_per_passage`` tokens of each (0: whole passages), until
``max_tokens`` tokens are scored (the last passage cut short). Perplexity is
exp(total NLL / total scored tokens), padding masked.

Table ``ablation``, one row per (layer, head): ppl with the head ablated, delta_ppl =
ppl - baseline_ppl, baseline_ppl, importance, n_tokens. Table ``ablation_passages``,
one row per (passage, layer, head): the summed NLL of the passage's scored tokens with
the head ablated and without (``baseline_nll_sum``), and their number, so that an
analysis can resample passages (token noise) rather than heads alone. Table
``ablation_layers`` (``layer_ablation``): per layer the mean delta_ppl over its heads
with a 95% bootstrap CI over the layer's heads, and the mean importance.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .._anatomy import decoder_layers, final_norm, hooks, output_projection
from .._bounds import at_least
from .._corpus import Corpus
from .._models import LoadedModel
from .._scoring import batches, budgeted, token_nll
from .._stats import bootstrap_ci
from .._progress import progress_bar
from ._registry import instrument

__all__ = ["measure_ablation", "layer_ablation"]

_LOGIT_ROWS = 2048  # tokens sent through the output embeddings at once: bounds the [rows, vocab] logits
#: a batch closes early rather than pad more than this share of its positions: every ablation pass runs the
#: layers above l on every position of its batch, padding included (256 tokens of three passages of 47, 84
#: and 128 tokens: 384 positions in one batch, 259 in three)
MAX_PADDING = 0.1


def layer_ablation(heads: pd.DataFrame, *, n_resamples: int, seed: int = 0) -> pd.DataFrame:
    """Per-layer summary of an ``ablation`` table (schema ``ablation_layers``): CI over the layer's heads."""
    rows = []
    for layer, g in heads.groupby("layer", sort=True):
        delta = g["delta_ppl"].to_numpy(float)
        lo, hi = bootstrap_ci((delta,), np.mean, paired=False, n_resamples=n_resamples, seed=seed)
        rows.append({"layer": int(layer), "n_heads": len(g), "mean_delta_ppl": float(delta.mean()),
                     "ci_low": lo, "ci_high": hi, "mean_importance": float(g["importance"].mean())})
    return pd.DataFrame(rows)


@instrument("ablation", version="3", measures=("ablation", "ablation_passages"),
            summaries={"ablation_layers": layer_ablation}, terms=("coupling", "viscosity"), runs_split=True)
def measure_ablation(lm: LoadedModel, corpus: Corpus, *, max_tokens: Annotated[int, at_least(1)] = 2048,
                     tokens_per_passage: Annotated[int, at_least(0)] = 0, batch_size: Annotated[int, at_least(1)] = 8,
                     heads_per_pass: Annotated[int, at_least(1)] = 4, progress: bool = True) -> dict[str, pd.DataFrame]:
    """Ablate every head of every layer in turn; one row per (layer, head) (schema ``ablation``).

    Settings:
        max_tokens: tokens scored in all, the domains taking turns
        tokens_per_passage: at most this many tokens of each passage (0: whole passages)
        batch_size: passages per forward pass
        heads_per_pass: ablations run side by side as replicas of a batch (speed only)
    """
    chosen = budgeted(lm, corpus, max_tokens, tokens_per_passage)
    encoded = [ids for _, ids in chosen]
    scored = np.array([len(ids) - 1 for ids in encoded])  # [P]
    n_tokens = int(scored.sum())
    layers = list(range(lm.n_layers))
    base_nll, nll = ablate_heads(lm, encoded, layers, batch_size, heads_per_pass, progress)  # [P], [P, L, H]
    importance = head_importance(lm, encoded, batch_size)
    base_ppl = math.exp(base_nll.sum() / n_tokens)
    ppl = np.exp(nll.sum(0) / n_tokens)  # [L, H]
    layer, head = np.indices(ppl.shape)
    p, pl, ph = np.indices(nll.shape)
    passages = pd.DataFrame({
        "passage_id": [chosen[i][0].id for i in p.ravel()], "domain": [chosen[i][0].domain for i in p.ravel()],
        "layer": pl.ravel(), "head": ph.ravel(), "nll_sum": nll.ravel(), "baseline_nll_sum": base_nll[p.ravel()],
        "n_tokens": scored[p.ravel()]})
    return {"ablation_passages": passages, "ablation": pd.DataFrame({
        "layer": layer.ravel(),
        "head": head.ravel(),
        "ppl": ppl.ravel(),
        "delta_ppl": ppl.ravel() - base_ppl,
        "baseline_ppl": base_ppl,
        "importance": importance.ravel(),
        "n_tokens": n_tokens,
    })}




def _head_gates(model: torch.nn.Module, gates: dict[int, torch.Tensor]):
    """Multiply head h's slice of layer l's output-projection input by gates[l][:, h] ([rows or 1, H]).

    A context manager: the gates act inside its block only."""
    def gate_hook(g):
        def hook(module, args):
            x = args[0]  # [R, T, H * head_dim]
            gate = g.to(x.device, x.dtype)  # a split model's layers: on several devices
            gated = x.unflatten(-1, (g.shape[-1], -1)) * gate[:, None, :, None]  # [R, T, H, head_dim]
            return (gated.flatten(-2), *args[1:])
        return hook

    return hooks(*[(output_projection(model, layer), "forward_pre", gate_hook(g)) for layer, g in gates.items()])


def _record_layer_inputs(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor):
    """One baseline forward: every decoder layer's (args, kwargs), and the final normed hidden state [B, T, D]."""
    records = []

    def keep(module, args, kwargs):
        records.append((args, kwargs))

    with hooks(*[(layer, "forward_pre_kwargs", keep) for layer in decoder_layers(model)]):
        final = model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    return records, final


def _tile(x, k: int, batch: int):
    """k copies along the batch of a recorded layer argument (tensors whose first dim is the batch)."""
    if isinstance(x, torch.Tensor) and x.dim() >= 2 and x.shape[0] == batch:
        return x.repeat(k, *[1] * (x.dim() - 1))
    if isinstance(x, (tuple, list)):
        return type(x)(_tile(v, k, batch) for v in x)
    return x


def _run_from(model: torch.nn.Module, records, start: int, gate: torch.Tensor) -> torch.Tensor:
    """Layers start..L-1 on the recorded input of ``start``, tiled to gate's rows; its head gates on ``start``.

    gate: [k * B, H]  ->  final normed hidden state [k * B, T, D]."""
    layers = decoder_layers(model)
    batch = records[start][0][0].shape[0]
    k = gate.shape[0] // batch
    h = _tile(records[start][0][0], k, batch)
    with _head_gates(model, {start: gate}):
        for i in range(start, len(layers)):
            args, kwargs = records[i]
            out = layers[i](h, *_tile(args[1:], k, batch), **{n: _tile(v, k, batch) for n, v in kwargs.items()})
            h = out[0] if isinstance(out, tuple) else out
    return final_norm(model)(h)


def _row_nll(model: torch.nn.Module, final: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed NLL of each row's scored tokens, float64 [R], from the final normed hidden state [R, T, D]."""
    keep = mask[:, 1:].bool()  # [R, T-1]: a token is scored when it is not padding
    rows = keep.nonzero()[:, 0]  # [N]
    hidden, targets = final[:, :-1][keep.to(final.device)], ids[:, 1:][keep]  # [N, D], [N]
    head = model.get_output_embeddings()
    nll = torch.cat([F.cross_entropy(logits.float(), t.to(logits.device), reduction="none").to(ids.device)
                     for logits, t in ((head(h), t) for h, t in zip(hidden.split(_LOGIT_ROWS),
                                                                     targets.split(_LOGIT_ROWS)))])  # [N]
    return torch.zeros(len(ids), dtype=torch.float64, device=ids.device).index_add_(0, rows, nll.double())


def ablate_heads(lm: LoadedModel, encoded: list[list[int]], layers: list[int], batch_size: int, heads_per_pass: int,
                 progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per passage: the baseline summed NLL [P], and the summed NLL with each head of ``layers`` ablated
    [P, len(layers), H]."""
    model, n_heads = lm.model, lm.n_heads
    groups = [g.tolist() for g in np.array_split(np.arange(n_heads), math.ceil(n_heads / heads_per_pass))]
    data = list(batches(encoded, batch_size, lm.doc_start_id, lm.device, MAX_PADDING))
    base, nll = np.zeros(len(encoded)), np.zeros((len(encoded), len(layers), n_heads))
    with torch.no_grad(), progress_bar(total=len(data) * len(layers) * len(groups), desc=f"ablation {lm.name}",
                                       unit="forward passes", enabled=progress) as bar:
        for idx, ids, mask in data:
            records, final = _record_layer_inputs(model, ids, mask)
            base[idx] = _row_nll(model, final, ids, mask).cpu().numpy()
            for row, layer in enumerate(layers):
                for heads in groups:
                    k = len(heads)
                    gate = torch.ones(k, n_heads, device=ids.device)
                    gate[torch.arange(k), heads] = 0.0  # replica j ablates heads[j]
                    ablated = _run_from(model, records, layer, gate.repeat_interleave(len(ids), 0))  # [k*B, T, D]
                    per_row = _row_nll(model, ablated, ids.repeat(k, 1), mask.repeat(k, 1))  # [k*B]
                    nll[np.ix_(idx, [row], heads)] = per_row.view(k, -1).T.cpu().numpy()[:, None, :]  # [B, 1, k]
                    bar.update()
    return base, nll


def head_importance(lm: LoadedModel, encoded: list[list[int]], batch_size: int) -> np.ndarray:
    """Michel's I_h: mean over passages of |d(passage mean NLL) / d gate_h| at all gates 1; [L, H]."""
    model, total = lm.model, np.zeros((lm.n_layers, lm.n_heads))
    with torch.enable_grad():
        for _, ids, mask in batches(encoded, batch_size, lm.doc_start_id, lm.device, MAX_PADDING):
            gates = torch.ones(lm.n_layers, len(ids), lm.n_heads, device=ids.device, requires_grad=True)  # [L, B, H]
            with _head_gates(model, dict(enumerate(gates))):
                nll = token_nll(model, ids, mask)  # [B, T-1]
            loss = (nll.sum(1) / mask[:, 1:].sum(1)).sum()  # passages are independent: grads stay per passage
            (grad,) = torch.autograd.grad(loss, gates)  # parameters get no .grad
            total += grad.abs().sum(1).double().cpu().numpy()
    return total / len(encoded)
