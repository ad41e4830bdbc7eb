"""The loss Hessian's spectrum: curvature of the landscape, whole-model or block by block.

The Framework's *viscosity* is the Hessian eigenvalue spectrum {lambda_i}: large
positive eigenvalues are steep, narrow valleys, negative ones saddle directions;
*slick / sticky* terrain is low / high local curvature; *coupling* is what the
off-diagonal Hessian adds: by Cauchy interlacing a block's extremes lie inside those
of any larger block holding it, so the gap between ``blocks=model`` and the per-block
extremes (attention vs MLP, layer by layer) is the coupling's share. Table
``hessian``, one row per number:

    kind=eigenvalue  the top_k extreme eigenvalues at BOTH ends: index 0, 1, ... from the
                     largest down, index -1, -2, ... from the smallest up
    kind=trace       Hutchinson's estimate of tr H (index 0), ``stderr`` its standard error
    kind=density     stochastic Lanczos quadrature: nodes (value) and weights (weight,
                     summing to 1 over a block), index = node number over all runs

``converged`` is the Lanczos residual test |beta_m s_{m,i}| <= tol |theta_i| for
eigenvalues and density nodes (an eigenvalue of H lies that close; its rank can be off
where eigenvalues crowd, since single-vector Lanczos resolves near-repeated eigenvalues
late), stderr <= tol |trace| for the trace; ``n_hvp`` counts
the Hessian-vector products spent on that block and kind; ``n_params`` is the block's
dimension (density weights times n_params count eigenvalues).

Loss: the token-weighted mean NLL (total nats / total scored tokens, padding masked,
BOS policy ``prepend``) of ONE batch of passages, taken round-robin over the corpus's
domains (first passage of each domain, then the second, ...) until ``max_tokens``
tokens are scored, at most ``tokens_per_passage`` of each (0: whole passages; e.g. 8
passages x 8 tokens spread a 64-token budget over every domain); the last passage taken
is truncated to fit.

Precision: Hessian-vector products run in float32 whatever dtype the model was loaded in
(bfloat16, the CUDA default, puts the top eigenvalue about 1e-3 off while the residual
test still passes): a model held in another dtype is measured through a temporary
float32 copy (its memory: 4 bytes per parameter), the loaded model untouched.

Method: Hessian-vector products by double backward (the gradient is built once with
``create_graph=True``, then each product is the gradient of <g, v>) under eager
attention (SDPA has no double backward), with every parameter outside the block frozen.

* backend ``atlas`` (``atlas.instruments._lanczos``): Lanczos with full
  reorthogonalisation, stopped once the top_k Ritz values at both ends have converged
  (or after ``lanczos_steps``); Hutchinson trace (``hutchinson_samples`` Rademacher
  probes); SLQ density (``slq_runs`` runs of ``lanczos_steps``). Probes come from a
  generator seeded 0 per block, so a run is reproducible on any device.
* backend ``pyhessian`` (the user's named package, pyhessian 0.1): its ``eigenvalues()``
  (power iteration with deflation, maxIter 100, stopping when the relative change is
  below ``tol``) and ``trace()``, on the parameters that require grad (so the rest are
  frozen), leaving its gradient with a graph in ``.grad`` (cleared after). Atlas
  goes its own way where pyhessian cannot serve: power iteration finds only the
  largest-*magnitude* eigenvalues, so this backend has no low end (indices 0.. in the
  order found) and ``converged`` is Atlas's residual check ||Hv - lambda v|| <= tol
  |lambda| (one product each, counted); ``density()`` calls ``torch.eig``, removed from
  torch, so density rows come from Atlas's SLQ (backend ``atlas``); its dataloader mode
  weights batches by rows, not tokens, so it gets one batch (``data=``); it moves data
  with ``.cuda()`` (the current device) and draws float32 vectors, so it runs under the
  model's CUDA device (on the float32 copy, like every product here); ``trace()``'s
  relative stopping test misfires on a negative trace, so it runs exactly ``hutchinson_samples`` probes.

Cost: a product costs about two backward passes through the layers above the block
(SmolLM2-135M, one CPU thread: layer 0's attention 0.8 s at 64 tokens, 4 s at 256;
layer 29's 0.15 s and 0.6 s); the Lanczos basis holds lanczos_steps x n_params float32
numbers (16 GB for a 135M model at 30 steps): whole-model spectra suit small models,
per-layer blocks big ones.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import math
import warnings
from contextlib import contextmanager, nullcontext
from typing import Annotated, Literal
from unittest import mock

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .._anatomy import attention_params, eager_attention, mlp_params
from .._bounds import above, at_least, comma_list
from .._corpus import Corpus
from .._errors import SettingsError
from .._models import LoadedModel
from .._scoring import batches, token_budget, token_nll
from .._progress import progress_bar
from ._lanczos import Ritz, hutchinson, lanczos, rademacher
from ._registry import instrument

__all__ = ["measure_hessian"]

BLOCKS = ("model", "attention", "mlp", "layers")
PYHESSIAN_MAX_ITER = 100


class BlockHessian:
    """v -> Hv for the Hessian of a loss w.r.t. ``params``, by double backward.

    Built from a scalar ``loss`` (the gradient is taken here) or from gradients that
    already carry a graph. Vectors are flat float32 [n] over ``params`` in order.
    """

    def __init__(self, params: list[nn.Parameter], loss: torch.Tensor | None = None,
                 grads: tuple[torch.Tensor, ...] | None = None):
        self.params = params
        self.grads = grads if grads is not None else torch.autograd.grad(loss, params, create_graph=True)
        self.sizes = [p.numel() for p in params]
        self.n = sum(self.sizes)
        self.count = 0  # products computed

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        parts = [part.view_as(p).to(p.dtype) for part, p in zip(torch.split(v, self.sizes), self.params)]
        hv = torch.autograd.grad(self.grads, self.params, grad_outputs=parts, retain_graph=True, allow_unused=True)
        self.count += 1
        return torch.cat([(torch.zeros_like(p) if h is None else h).reshape(-1).float()
                          for h, p in zip(hv, self.params)])  # [n]


def hessian_batch(lm: LoadedModel, corpus: Corpus, max_tokens: int, per_passage: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch (input_ids [B, T], attention_mask [B, T]) scoring ``max_tokens`` tokens of passages taken
    with the domains in turn, at most ``per_passage`` of each (``atlas._scoring.token_budget``), the last one
    truncated to fit."""
    encoded = token_budget(lm, corpus, max_tokens, per_passage)
    _, ids, mask = next(batches(encoded, len(encoded), lm.doc_start_id, lm.device))
    return ids, mask


#: the ``layers`` setting: "all", or a comma list of layer numbers (checked against the model by ``select_layers``)
LAYERS = comma_list(int, at_least(0), words=("all",))


def select_layers(model: nn.Module, layers: str) -> list[int]:
    """The decoder layers a ``layers`` setting names: "all", or a comma list such as "0,5,10"."""
    n_layers = model.config.num_hidden_layers
    chosen = LAYERS.parse(layers, "layers")
    if chosen == "all":
        return list(range(n_layers))
    if bad := [i for i in chosen if not 0 <= i < n_layers]:
        raise SettingsError(f"layers {bad} out of range: the model has layers 0..{n_layers - 1}")
    return chosen


def hessian_blocks(model: nn.Module, blocks: str, layers: str) -> list[tuple[str, list[nn.Parameter]]]:
    """(block id, its parameters) for a ``blocks`` setting and a ``layers`` selection ("all" or "0,5,10")."""
    if blocks not in BLOCKS:
        raise SettingsError(f"unknown blocks {blocks!r}: use one of {', '.join(BLOCKS)}")
    if blocks == "model":
        return [("model", list(model.parameters()))]
    chosen = select_layers(model, layers)
    parts = {"attention": [("attention", attention_params)], "mlp": [("mlp", mlp_params)],
             "layers": [("attention", attention_params), ("mlp", mlp_params)]}[blocks]
    return [(f"layer.{i}.{part}", find(model, i)) for i in chosen for part, find in parts]


@contextmanager
def only_block_requires_grad(model: nn.Module, params: list[nn.Parameter]):
    """Freeze every parameter outside the block (no graph is built for them); restore flags and grads."""
    flags = {p: (p.requires_grad, p.grad) for p in model.parameters()}
    block = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in block)
        p.grad = None
    try:
        yield
    finally:
        for p, (flag, grad) in flags.items():
            p.requires_grad_(flag)
            p.grad = grad


def mean_nll(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return token_nll(model, ids, mask).sum() / mask[:, 1:].sum()  # total nats / total scored tokens


def _row(block, kind, index, value, backend, n_hvp, converged, n_params, weight=None, stderr=None) -> dict:
    return {"block": block, "kind": kind, "index": int(index), "value": float(value), "weight": weight,
            "stderr": stderr, "backend": backend, "n_hvp": int(n_hvp), "converged": bool(converged),
            "n_params": int(n_params)}


def _extremes(found: Ritz, top_k: int) -> list[tuple[int, int]]:
    """(row index, position in the ascending Ritz values): 0.. from the top, -1.. from the bottom."""
    m = len(found.values)
    k = min(top_k, m)
    return [(i, m - 1 - i) for i in range(k)] + [(-1 - i, i) for i in range(k)]


def _eigen_rows(block, H: BlockHessian, top_k, steps, tol, generator, device) -> list[dict]:
    def both_ends_converged(found: Ritz) -> bool:
        ok = found.converged(tol)
        return len(found.values) >= 2 * top_k and all(ok[pos] for _, pos in _extremes(found, top_k))

    before = H.count
    found, _ = lanczos(H, rademacher(H.n, generator, device), steps, stop=both_ends_converged)
    ok = found.converged(tol)
    return [_row(block, "eigenvalue", i, found.values[pos], "atlas", H.count - before, ok[pos], H.n)
            for i, pos in _extremes(found, top_k)]


def _trace_row(block, H: BlockHessian, samples, tol, generator, device) -> list[dict]:
    before = H.count
    mean, se = hutchinson(H, H.n, samples, generator, device)
    return [_row(block, "trace", 0, mean, "atlas", H.count - before, se <= tol * abs(mean), H.n,
                 stderr=None if math.isnan(se) else se)]


def density_rows(block, H: BlockHessian, runs, steps, tol, generator, device) -> list[dict]:
    before, nodes = H.count, []
    for _ in range(runs):
        found, _ = lanczos(H, rademacher(H.n, generator, device), steps)
        nodes += zip(found.values, found.weights / runs, found.converged(tol))
    return [_row(block, "density", i, value, "atlas", H.count - before, ok, H.n, weight=float(w))
            for i, (value, w, ok) in enumerate(nodes)]


class PyHessianLM(nn.Module):
    """What pyhessian calls: ``model(inputs)`` with inputs [2, B, T] = (input_ids, attention_mask) -> logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=inputs[0], attention_mask=inputs[1]).logits  # [B, T, V]


def masked_mean_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """pyhessian's ``criterion(outputs, targets)``: token-weighted mean NLL; targets [B, T-1], -100 at padding."""
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.flatten(), ignore_index=-100)


def _pyhessian_rows(block, lm, ids, mask, top_k, samples, tol) -> tuple[list[dict], BlockHessian]:
    ph = importlib.import_module("pyhessian.hessian")  # the package re-exports the class under this name
    cuda = lm.device.startswith("cuda")
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)  # [B, T-1]
    with torch.cuda.device(lm.device) if cuda else nullcontext(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
        engine = ph.hessian(PyHessianLM(lm.model), masked_mean_nll, data=(torch.stack([ids, mask]), targets),
                            cuda=cuda)
        H = BlockHessian(engine.params, grads=tuple(engine.gradsH))  # shares pyhessian's graph
        rows = []
        # pyhessian does not report how many products it spent: count its calls
        with mock.patch.object(ph, "hessian_vector_product", wraps=ph.hessian_vector_product) as counted:
            values, vectors = engine.eigenvalues(maxIter=PYHESSIAN_MAX_ITER, tol=tol, top_n=top_k)
            n_hvp = counted.call_count + len(values)  # and one residual check each, below
            for i, (value, vector) in enumerate(zip(values, vectors)):
                v = torch.cat([x.reshape(-1) for x in vector]).float()  # [n]
                v /= v.norm()
                ok = float((H(v) - value * v).norm()) <= tol * abs(value)
                rows.append(_row(block, "eigenvalue", i, value, "pyhessian", n_hvp, ok, H.n))
            if samples:
                counted.reset_mock()
                draws = np.array(engine.trace(maxIter=samples, tol=float("-inf")))  # exactly `samples` probes
                se = float(draws.std(ddof=1) / np.sqrt(len(draws))) if len(draws) > 1 else None
                rows.append(_row(block, "trace", 0, draws.mean(), "pyhessian", counted.call_count,
                                 se is not None and se <= tol * abs(draws.mean()), H.n, stderr=se))
    return rows, H


@instrument("hessian", version="2", measures=("hessian",), terms=("viscosity", "coupling", "slick_sticky"))
def measure_hessian(lm: LoadedModel, corpus: Corpus, *, backend: Literal["atlas", "pyhessian"] = "atlas",
                    blocks: Literal["model", "attention", "mlp", "layers"] = "model",
                    layers: Annotated[str, LAYERS] = "all", top_k: Annotated[int, at_least(1)] = 5,
                    lanczos_steps: Annotated[int, at_least(1)] = 30, hutchinson_samples: Annotated[int, at_least(0)] = 20,
                    slq_runs: Annotated[int, at_least(0)] = 1, max_tokens: Annotated[int, at_least(1)] = 256,
                    tokens_per_passage: Annotated[int, at_least(0)] = 0, tol: Annotated[float, above(0)] = 1e-3,
                    progress: bool = True) -> dict[str, pd.DataFrame]:
    """Hessian eigenvalues (both ends), trace and density per block (schema ``hessian``).

    Settings:
        backend: atlas (Lanczos, Hutchinson, SLQ) or pyhessian (power iteration, for comparison)
        blocks: model (all parameters at once), attention, mlp, or layers (both blocks of each layer)
        layers: "all" or a comma list of layer numbers, for per-layer blocks
        top_k: eigenvalues reported at each end of the spectrum
        lanczos_steps: at most this many Lanczos steps (products) per block and run
        hutchinson_samples: Rademacher probes of the trace (0: no trace)
        slq_runs: stochastic Lanczos quadrature runs of the density (0: no density)
        max_tokens: tokens of the one batch the loss is taken on, the domains taking turns
        tokens_per_passage: at most this many tokens of each passage (0: whole passages)
        tol: relative residual under which a Ritz value counts as converged
    """
    if lm.model.dtype != torch.float32:  # products in float32 whatever the session dtype: a temporary copy
        lm = dataclasses.replace(lm, model=copy.deepcopy(lm.model).float(), dtype="float32")
    model = lm.model
    chosen = hessian_blocks(model, blocks, layers)
    ids, mask = hessian_batch(lm, corpus, max_tokens, tokens_per_passage)  # [B, T] each
    training, rows = model.training, []
    model.eval()
    try:
        with eager_attention(model), torch.enable_grad():
            for block, params in progress_bar(chosen, desc=f"hessian {lm.name}", unit="blocks", enabled=progress):
                generator = torch.Generator().manual_seed(0)
                with only_block_requires_grad(model, params):
                    if backend == "pyhessian":
                        found, H = _pyhessian_rows(block, lm, ids, mask, top_k, hutchinson_samples, tol)
                        rows += found
                    else:
                        H = BlockHessian(params, mean_nll(model, ids, mask))
                        rows += _eigen_rows(block, H, top_k, lanczos_steps, tol, generator, lm.device)
                        if hutchinson_samples:
                            rows += _trace_row(block, H, hutchinson_samples, tol, generator, lm.device)
                    if slq_runs:
                        # pyhessian's density() needs torch.eig (removed from torch): Atlas's SLQ in both backends
                        rows += density_rows(block, H, slq_runs, lanczos_steps, tol, generator, lm.device)
                    del H
    finally:
        model.train(training)
    columns = ["block", "kind", "index", "value", "weight", "stderr", "backend", "n_hvp", "converged", "n_params"]
    table = pd.DataFrame(rows, columns=columns).astype({"weight": float, "stderr": float})
    return {"hessian": table.assign(n_tokens=int(mask[:, 1:].sum()))}
