"""Permutation symmetries of a decoder: many parameter vectors, one function (symmetry orbits).

The Framework's *symmetry orbits* (global geometry): orbit([W]) = {σ(W) : f_σ(W) = f_W}.
The largest family of such σ in a transformer are permutations of units that nothing
outside their layer can tell apart (Entezari et al. 2022, "The role of permutation
invariance in linear mode connectivity of neural networks"; Ainsworth et al. 2022,
"Git Re-Basin: merging models modulo permutation symmetries"):

* **MLP hidden units** of layer l (d_ff of them): an elementwise activation commutes with a
  permutation P, so out(act(in(x))) = (out P^T)(act((P in)(x))). P reorders the input
  projections' output axis and biases (GPT-2 ``c_fc``; Llama ``gate_proj`` *and*
  ``up_proj``; OPT ``fc1``) and the output projection's input axis (``c_proj``,
  ``down_proj``, ``fc2``).
* **Attention heads** of layer l: heads are summed by the output projection, so reordering
  whole heads (blocks of head_dim rows of q, k, v and the matching columns of the output
  projection; GPT-2's fused ``c_attn`` holds q | k | v side by side) leaves the layer's
  output unchanged. Rotary embeddings rotate every head alike, so Llama heads permute too.
  *Grouped-query attention* (n_kv < n_heads, g = n_heads / n_kv query heads read each KV
  head): a KV head moves as a block with its g query heads (KV heads are permuted among
  themselves, and every group's query heads go with it), and query heads *within one
  group* may be permuted among themselves (they read the same keys and values). The head
  group is the wreath product S_g ≀ S_{n_kv}; a permutation that splits a group is refused.
* **The residual stream** (d_model features, optional): LayerNorm and RMSNorm treat all
  features alike, so one permutation of the stream applied to every embedding, norm and
  projection that reads or writes it (``atlas._anatomy.residual_axes``) is a symmetry too.

Convention: a ``Permutation`` holds, per family, an index array ``perm`` with "new unit i
is old unit perm[i]" (``torch.index_select``), so applying σ then π gives units σ[π].
Not covered: scale symmetries (q/k rescaling, ReLU positive homogeneity), within-head
feature permutations (rotary embeddings pair the features of q and k), sign flips.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .._anatomy import decoder_layers, head_axes, head_dim, kv_groups, mlp_axes, residual_axes

__all__ = ["Key", "Permutation", "Plan", "Segment", "logit_change", "parameter_distance", "permute",
           "random_permutation"]

Key = tuple[str, int]  # ("residual", -1) | ("mlp", layer) | ("query", layer) | ("kv", layer)


@dataclass(frozen=True)
class Permutation:
    """One element of a decoder's permutation group; "new unit i is old unit perm[i]"."""

    mlp: tuple[np.ndarray, ...]  # per layer [d_ff]
    heads: tuple[np.ndarray, ...]  # per layer [n_heads], query heads; KV heads follow their groups
    residual: np.ndarray | None = None  # [d_model]; None leaves the residual stream in place


@dataclass(frozen=True)
class Segment:
    """``n`` units of ``block`` consecutive indices each, from ``offset`` on ``axis``, permuted by ``key``."""

    axis: int
    offset: int
    key: Key
    n: int
    block: int


class Plan:
    """Where each permutation acts in one model: parameter name -> the segments of its axes.

    Built from ``atlas._anatomy`` (``mlp_axes``, ``head_axes``, ``residual_axes``), so GPT-2,
    OPT and Llama/Mistral layouts are covered wherever those functions are."""

    def __init__(self, model: nn.Module):
        self.n_layers = len(decoder_layers(model))
        self.head_dim, self.groups = head_dim(model), kv_groups(model)
        self.n_heads = model.config.num_attention_heads
        self.n_kv = self.n_heads // self.groups
        shapes = {name: p.shape for name, p in model.named_parameters()}
        self.segments: dict[str, list[Segment]] = {}
        residual = residual_axes(model)
        self.d_model = shapes[residual[0].param][residual[0].axis]
        for a in residual:
            self._add(a.param, Segment(a.axis, a.offset, ("residual", -1), self.d_model, 1))
        self.d_ff = []
        for layer in range(self.n_layers):
            axes = mlp_axes(model, layer)
            self.d_ff.append(shapes[axes[0].param][axes[0].axis])
            for a in axes:
                self._add(a.param, Segment(a.axis, a.offset, ("mlp", layer), self.d_ff[-1], 1))
            for part, axes in head_axes(model, layer).items():
                key, n = (("query", layer), self.n_heads) if part in "qo" else (("kv", layer), self.n_kv)
                for a in axes:
                    self._add(a.param, Segment(a.axis, a.offset, key, n, self.head_dim))

    def _add(self, param: str, segment: Segment) -> None:
        self.segments.setdefault(param, []).append(segment)

    def identity(self) -> Permutation:
        return Permutation(mlp=tuple(np.arange(n) for n in self.d_ff),
                           heads=tuple(np.arange(self.n_heads) for _ in range(self.n_layers)))

    def units(self, perm: Permutation, key: Key) -> np.ndarray | None:
        """The index array of family ``key`` (None: identity); KV heads are read off the query heads."""
        kind, layer = key
        if kind == "residual":
            return perm.residual
        if kind == "mlp":
            return perm.mlp[layer]
        query = perm.heads[layer]
        return query if kind == "query" else query.reshape(self.n_kv, self.groups)[:, 0] // self.groups

    def apply(self, name: str, tensor: torch.Tensor, perm: Permutation, skip: frozenset[Key] = frozenset()
              ) -> torch.Tensor:
        """``tensor`` (parameter ``name``) with every family of ``perm`` applied except those in ``skip``."""
        for s in self.segments.get(name, []):
            units = None if s.key in skip else self.units(perm, s.key)
            if units is None:
                continue
            index = torch.arange(tensor.shape[s.axis])
            moved = torch.as_tensor(units)[:, None] * s.block + torch.arange(s.block)  # [n, block]
            index[s.offset: s.offset + s.n * s.block] = s.offset + moved.reshape(-1)
            tensor = tensor.index_select(s.axis, index.to(tensor.device))
        return tensor

    def check(self, perm: Permutation) -> None:
        """Raise one ValueError naming what is not a valid element of this model's group."""
        problems = []
        if len(perm.mlp) != self.n_layers or len(perm.heads) != self.n_layers:
            problems.append(f"{len(perm.mlp)} MLP and {len(perm.heads)} head permutations for {self.n_layers} layers")
        else:
            for layer in range(self.n_layers):
                for what, units, n in (("MLP", perm.mlp[layer], self.d_ff[layer]),
                                       ("heads", perm.heads[layer], self.n_heads)):
                    if not _is_permutation(units, n):
                        problems.append(f"layer {layer} {what}: not a permutation of 0..{n - 1}")
                query = perm.heads[layer]
                if _is_permutation(query, self.n_heads):
                    groups = query.reshape(self.n_kv, self.groups) // self.groups  # [n_kv, g] source group
                    if not (groups == groups[:, :1]).all():
                        problems.append(f"layer {layer} heads {query.tolist()} split a KV group (grouped-query "
                                        f"attention, {self.groups} query heads per KV head): move each group of "
                                        "query heads as a block, and permute query heads only within a group")
        if perm.residual is not None and not _is_permutation(perm.residual, self.d_model):
            problems.append(f"residual: not a permutation of 0..{self.d_model - 1}")
        if problems:
            raise ValueError("invalid permutation: " + "; ".join(problems))


def random_permutation(model: nn.Module, seed: int = 0, *, mlp: bool = True, heads: bool = True,
                       residual: bool = False) -> Permutation:
    """A uniformly random element of the chosen families (the others left in place), seeded.

    Heads: a random order of the KV groups, then a random order of the query heads within each."""
    plan, rng = Plan(model), np.random.default_rng(seed)
    identity = plan.identity()
    g = plan.groups

    def query_heads() -> np.ndarray:
        groups = rng.permutation(plan.n_kv)  # [n_kv] new group a is old group groups[a]
        return np.concatenate([old * g + rng.permutation(g) for old in groups])  # [n_heads]

    return Permutation(
        mlp=tuple(rng.permutation(n) for n in plan.d_ff) if mlp else identity.mlp,
        heads=tuple(query_heads() for _ in range(plan.n_layers)) if heads else identity.heads,
        residual=rng.permutation(plan.d_model) if residual else None)


def permute(model: nn.Module, perm: Permutation) -> nn.Module:
    """A copy of ``model`` with ``perm`` applied to every weight that touches the permuted units.

    The original is not changed. Tied weights (GPT-2's and OPT's output embeddings) are one
    parameter and are permuted once."""
    plan = Plan(model)
    plan.check(perm)
    permuted = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in permuted.named_parameters():
            p.copy_(plan.apply(name, p, perm))
    return permuted


def parameter_distance(a: nn.Module, b: nn.Module) -> float:
    """‖θ_a − θ_b‖₂ over all parameters (tied ones once), computed in float64."""
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    if pa.keys() != pb.keys() or any(pa[k].shape != pb[k].shape for k in pa):
        raise ValueError("parameter_distance needs two models of the same architecture and size "
                         "(same parameter names and shapes)")
    return float(sum(((pa[k].detach().double() - pb[k].detach().double()) ** 2).sum() for k in pa)) ** 0.5


def logit_change(a: nn.Module, b: nn.Module, input_ids: torch.Tensor) -> float:
    """max |logits_a − logits_b| over a batch of token ids [B, T]: 0 for two points of one orbit."""
    with torch.no_grad():
        return float((a(input_ids=input_ids).logits - b(input_ids=input_ids).logits).abs().max())  # [B, T, V]


def _is_permutation(units: np.ndarray, n: int) -> bool:
    units = np.asarray(units)
    return units.shape == (n,) and np.array_equal(np.sort(units), np.arange(n))
