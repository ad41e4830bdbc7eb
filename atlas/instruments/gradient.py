"""Gradient: elevation, slope and output sharpness of the loss surface at the model, per domain.

Four Framework terms read at one point θ of the landscape, on each domain's text:

    loss       *elevation* (terrain): the raw loss, token-weighted mean NLL in nats
    grad_norm  *steep / shallow* (terrain): ‖∇θ L‖₂, the first derivative of that loss
               with respect to every parameter
    entropy    *hot / cold* (terrain, output usage): mean entropy (nats) of the
               next-token distribution; hot flattens it (high), cold concentrates it
    max_prob   *probability* (navigator): mean top probability of the next-token
               distribution, the sharpness of the output

Method. Each domain takes its passages in corpus order, whole, while their scored
tokens stay within ``max_tokens_per_domain`` (at least one passage). L is the
domain's token-weighted mean NLL (BOS policy ``prepend``, padding masked), so its
gradient over several batches is the sum of each batch's ``∇ Σ nll / N`` with N
the domain's token count: accumulated exactly, not a mean of per-batch norms.
``torch.autograd.grad`` returns the gradient without touching ``.grad``; parameters
that were frozen are unfrozen for the call and frozen again. Table
``gradient_layers`` splits the norm over decoder layers (their parameters only;
embeddings, final norm and head count in the total alone), so the layers'
root-sum-square is at most ``grad_norm``.
"""

from __future__ import annotations

from typing import Annotated

import pandas as pd
import torch

from .._anatomy import decoder_layers
from .._bounds import at_least
from .._corpus import Corpus, Passage
from .._models import LoadedModel
from .._scoring import batches, encode, token_nll
from .._progress import progress_bar
from ._registry import instrument

__all__ = ["measure_gradient"]


@instrument("gradient", version="1", measures=("gradient", "gradient_layers"),
            terms=("elevation", "steep_shallow", "probability", "hot_cold"))
def measure_gradient(lm: LoadedModel, corpus: Corpus, *, max_tokens_per_domain: Annotated[int, at_least(1)] = 512,
                     batch_size: Annotated[int, at_least(1)] = 8, progress: bool = True) -> dict[str, pd.DataFrame]:
    """One row per domain (schema ``gradient``) and one per domain and layer (schema ``gradient_layers``).

    Settings:
        max_tokens_per_domain: each domain's leading passages, whole, while their scored tokens fit (at least one)
        batch_size: passages per forward pass
    """
    params = [p for _, p in lm.model.named_parameters()]
    layers = decoder_layers(lm.model)
    layer_of = {id(p): i for i, block in enumerate(layers) for p in block.parameters()}
    frozen = [p for p in params if not p.requires_grad]
    rows, layer_rows = [], []
    try:
        for p in frozen:
            p.requires_grad_(True)
        with torch.enable_grad():
            for domain in progress_bar(corpus.domains, desc=f"gradient {lm.name}", unit="domains", enabled=progress):
                passages, encoded = _budget(lm, [p for p in corpus.passages if p.domain == domain],
                                            max_tokens_per_domain)
                row, grads = _domain(lm, encoded, params, batch_size)
                rows.append({"domain": domain, **row, "n_passages": len(passages)})
                per_layer = torch.zeros(len(layers), dtype=torch.float64)
                for p, g in zip(params, grads):
                    if id(p) in layer_of:
                        per_layer[layer_of[id(p)]] += g.double().square().sum().cpu()
                layer_rows += [{"domain": domain, "layer": i, "grad_norm": float(s.sqrt())}
                               for i, s in enumerate(per_layer)]
    finally:
        for p in frozen:
            p.requires_grad_(False)
    return {"gradient": pd.DataFrame(rows), "gradient_layers": pd.DataFrame(layer_rows)}


def _budget(lm: LoadedModel, passages: list[Passage], max_tokens: int) -> tuple[list[Passage], list[list[int]]]:
    """The leading passages whose scored tokens fit in ``max_tokens`` (at least one), and their encodings."""
    encoded = encode(lm, [p.text for p in passages], "prepend")
    total, n = 0, 0
    while n < len(encoded) and (n == 0 or total + len(encoded[n]) - 1 <= max_tokens):
        total += len(encoded[n]) - 1
        n += 1
    return passages[:n], encoded[:n]


def _domain(lm: LoadedModel, encoded: list[list[int]], params: list[torch.nn.Parameter], batch_size: int
            ) -> tuple[dict, list[torch.Tensor]]:
    """Loss, gradient norm and output sharpness of one domain's passages; also the gradient itself."""
    n_tokens = sum(len(ids) - 1 for ids in encoded)
    grads = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    nll_sum = entropy_sum = max_prob_sum = 0.0
    for _, ids, mask in batches(encoded, batch_size, lm.doc_start_id, lm.device):
        kept = _KeepLogits(lm.model)
        nll = token_nll(kept, ids, mask)  # [B, T-1]
        for acc, g in zip(grads, torch.autograd.grad(nll.sum() / n_tokens, params, allow_unused=True)):
            if g is not None:
                acc += g
        with torch.no_grad():
            scored = mask[:, 1:].bool()  # [B, T-1]
            logp = torch.log_softmax(kept.logits[:, :-1].float(), dim=-1)[scored]  # [n, V]
            nll_sum += float(nll.detach().double().sum())
            entropy_sum += float(-(logp.exp() * logp).sum(-1).double().sum())
            max_prob_sum += float(logp.max(-1).values.exp().double().sum())
    grad_norm = float(torch.sqrt(sum(g.double().square().sum() for g in grads)))
    return {"loss": nll_sum / n_tokens, "grad_norm": grad_norm, "entropy": entropy_sum / n_tokens,
            "max_prob": max_prob_sum / n_tokens, "n_tokens": n_tokens}, grads


class _KeepLogits:
    """Calls the model and keeps its logits, so that one forward pass serves the loss and the output statistics."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.logits = model, None

    def __call__(self, **inputs):
        out = self.model(**inputs)
        self.logits = out.logits.detach()  # [B, T, V]
        return out
