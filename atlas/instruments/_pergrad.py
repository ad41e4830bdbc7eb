"""Gradients passage by passage, and the Gram matrices built from them: shared by the gradient-statistics
instruments (``smoothness``, ``tightness``, ``elasticity``).

The unit is the passage. A passage's loss is its mean NLL per scored token (BOS policy
``prepend``, at most ``max_tokens`` scored tokens, the rest of the passage cut off), so
every passage weighs the same whatever its length, and a domain's gradient is the mean of
its passages' gradients:

    g_i = ∇θ (1/T_i) Σ_t nll_it          G_d = (1/n_d) Σ_{i in d} g_i

``passage_gradients`` yields g_i with one forward and one backward pass per passage
(``torch.autograd.grad``: ``.grad`` is never touched; parameters that were frozen are
unfrozen for the call and frozen again, so they count like the others);
``domain_gradient`` computes G_d in batched passes, the same number up to float
rounding. Every parameter counts once (a tied input/output embedding is one tensor).

Blocks: ``block_names`` are ``model`` (every parameter) and ``layer.<i>`` (the parameters
of decoder layer i); embeddings, final norm and head count in ``model`` only.

Gram matrices (``HalfStore``): K_ij = <v_i, v_j> per block, for n vectors held in half
precision. The squared norms K_ii are exact (float32 norms of the full-precision
vectors, summed in float64); the products i != j come from the stored copies: each
tensor scaled by a power of two that puts its largest entry in [2^14, 2^15), then
rounded to float16 (11 significant bits; the scaling is exact and keeps entries far
below the largest one out of float16's underflow). n whole-model vectors cost n x 2
bytes per parameter (eight passages of SmolLM2-135M: 2.2 GB), half of float32, in
buffers allocated once and reused (fresh CPU allocations of this size cost as much as
the arithmetic); products are summed in float32 chunks into float64. Measured against
float32 on the tiny models (16 to 128 tokens, every block): off-diagonal products
within 1.6e-4 of |v_i||v_j| (bfloat16 storage would be off by up to 1.3e-3).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from .._anatomy import decoder_layers
from .._corpus import Corpus, Passage
from .._models import LoadedModel
from .._scoring import batches, encode, token_nll

__all__ = ["HalfStore", "block_names", "domain_gradient", "domain_passages", "parameters", "passage_gradients"]

Vector = tuple[torch.Tensor, ...]  # one tensor per parameter, aligned with ``parameters(model)[0]``

_CHUNK = 1 << 22  # coordinates per matrix product in HalfStore.gram: a float32 work buffer of n x 16 MB


def block_names(n_layers: int) -> list[str]:
    """``model`` first, then ``layer.0`` ... ``layer.<n_layers-1>``: the rows of ``HalfStore.gram``."""
    return ["model", *(f"layer.{i}" for i in range(n_layers))]


def parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[int]]:
    """Every parameter once, and the decoder layer it belongs to (-1: embeddings, final norm, head)."""
    params = list(model.parameters())
    layer_of = {id(p): i for i, block in enumerate(decoder_layers(model)) for p in block.parameters()}
    return params, [layer_of.get(id(p), -1) for p in params]


def domain_passages(lm: LoadedModel, corpus: Corpus, max_tokens: int) -> list[tuple[str, list[Passage],
                                                                                     list[list[int]]]]:
    """Per domain, in corpus order: its passages and their token ids (document-start token first, at most
    ``max_tokens`` scored tokens each)."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1 (tokens scored per passage), not {max_tokens}")
    out = []
    for domain in corpus.domains:
        passages = [p for p in corpus.passages if p.domain == domain]
        encoded = [ids[: max_tokens + 1] for ids in encode(lm, [p.text for p in passages], "prepend")]
        out.append((domain, passages, encoded))
    return out


@contextmanager
def _every_parameter_requires_grad(params: Sequence[nn.Parameter]):
    frozen = [p for p in params if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


def _gradient(loss: torch.Tensor, params: Sequence[nn.Parameter]) -> Vector:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return tuple(torch.zeros_like(p) if g is None else g for g, p in zip(grads, params))


def passage_gradients(lm: LoadedModel, encoded: Sequence[list[int]], params: Sequence[nn.Parameter]
                      ) -> Iterator[Vector]:
    """g_i for each passage in turn: the gradient of its mean NLL per scored token."""
    with _every_parameter_requires_grad(params):
        for ids in encoded:
            x = torch.tensor([ids], device=lm.device)  # [1, T]
            nll = token_nll(lm.model, x, torch.ones_like(x))  # [1, T-1]
            yield _gradient(nll.sum() / nll.shape[1], params)


def domain_gradient(lm: LoadedModel, encoded: Sequence[list[int]], params: Sequence[nn.Parameter],
                    batch_size: int) -> Vector:
    """G_d = mean_i g_i, in batched backward passes: the gradient of (1/n) Σ_i (1/T_i) Σ_t nll_it."""
    total = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    scored = torch.tensor([len(ids) - 1 for ids in encoded], dtype=torch.float32, device=lm.device)  # [n]
    with _every_parameter_requires_grad(params):
        for idx, ids, mask in batches(encoded, batch_size, lm.doc_start_id, lm.device):
            nll = token_nll(lm.model, ids, mask)  # [B, T-1], 0 at padding
            loss = (nll.sum(-1) / scored[idx]).sum() / len(encoded)
            for acc, g in zip(total, _gradient(loss, params)):
                acc += g
    return tuple(total)


class HalfStore:
    """Up to ``capacity`` vectors over ``params``, held in float16, and their Gram matrices per block."""

    def __init__(self, params: Sequence[nn.Parameter], layer: Sequence[int], capacity: int):
        self.layer, self.capacity, self.n = list(layer), capacity, 0
        self.buffers = [torch.empty((capacity, p.numel()), dtype=torch.float16, device=p.device) for p in params]
        self.scales = np.ones((capacity, len(self.buffers)))  # [capacity, P]: the power of two per tensor
        self.norms_sq = np.zeros((capacity, len(self.buffers)))  # [capacity, P]: exact |v|^2 per tensor

    def add(self, vector: Vector) -> None:
        """Store a vector. Its tensors are scaled in place: the caller's copy is consumed."""
        if self.n == self.capacity:
            raise ValueError(f"HalfStore holds at most {self.capacity} vectors")
        for p, t in enumerate(vector):
            flat = t.detach().reshape(-1)
            low, high = torch.aminmax(flat)
            top = max(-float(low), float(high))
            scale = 2.0 ** (math.floor(math.log2(top)) - 14) if top > 0 else 1.0
            self.norms_sq[self.n, p] = float(torch.linalg.vector_norm(flat, dtype=torch.float32)) ** 2
            self.scales[self.n, p] = scale
            self.buffers[p][self.n].copy_(flat.mul_(1.0 / scale))
        self.n += 1

    def clear(self) -> None:
        self.n = 0

    def gram(self, n_layers: int) -> np.ndarray:
        """Gram matrices of the stored vectors per block: [1 + n_layers, n, n] float64, rows as ``block_names``."""
        n = self.n
        gram = np.zeros((1 + n_layers, n, n))
        work = torch.empty((n, min(_CHUNK, max(b.shape[1] for b in self.buffers))), device=self.buffers[0].device)
        for p, (buffer, block) in enumerate(zip(self.buffers, self.layer)):
            part = torch.zeros(n, n, dtype=torch.float64, device=buffer.device)
            for start in range(0, buffer.shape[1], work.shape[1]):
                x = work[:, : min(work.shape[1], buffer.shape[1] - start)]  # [n, chunk]
                x.copy_(buffer[:n, start:start + x.shape[1]])
                part += (x @ x.T).double()
            part = part.cpu().numpy() * np.outer(self.scales[:n, p], self.scales[:n, p])
            np.fill_diagonal(part, self.norms_sq[:n, p])
            gram[0] += part
            if block >= 0:
                gram[1 + block] += part
        return gram
