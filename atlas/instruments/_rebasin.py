"""Weight matching: align model B to model A modulo permutation symmetries (git re-basin).

Ainsworth et al. (2022, "Git Re-Basin", section 3.2 "matching weights", algorithm 1
"permutation coordinate descent") look
for the element σ of the permutation group (``atlas.instruments._symmetry``) that brings B's
weights closest to A's,

    σ* = argmin_σ ‖θ_A − σ(θ_B)‖²  =  argmax_σ Σ_W ⟨W_A, σ(W_B)⟩,

since permutations preserve ‖θ_B‖. The objective couples families that share a weight
(a projection's input axis belongs to the residual stream, its output axis to the MLP or
the heads), so it is maximised by coordinate descent: one family at a time, with every
other family held at its current value, the best permutation of that family is a linear
assignment problem, solved exactly by ``scipy.optimize.linear_sum_assignment``:

    C[i, j] = Σ_{W touching the family} ⟨unit i of W_A, unit j of W_B (others applied)⟩   # [n, n]

(a unit's slice of W: its rows, columns or block of head_dim rows, flattened). The families
are visited in a seeded random order each sweep, a family changes only when its part of the
objective rises (by more than 1e-10 relative), and the descent stops after a sweep with no
change: a local optimum, reached in few sweeps (the objective rises monotonically).

Heads under grouped-query attention (g query heads per KV head) are solved exactly as one
nested assignment: for each pair of KV groups (a of A, b of B), the g×g assignment of their
query heads (q rows and output-projection columns) gives value Q[a, b]; the KV-group
assignment then maximises K[a, b] + Q[a, b], K from the k and v rows.

The residual stream. With ``residual=True`` (the default) the stream's d_model features are
one more family, touching the embeddings, every norm and every projection; without it the
MLP and head families of different layers share no weight, each is solved in one step (one
sweep, no confirming one), and the result stays blind to the basis in which each model happens to write its stream. Two
independently trained models choose that basis independently (random initialisation), so
matching them without it compares MLP rows written in unrelated coordinates: the residual
permutation is included by default, as a real symmetry of pre-/post-norm transformers
(Verma & Elbayad 2024, "Merging text transformer models from different initializations",
permute the residual stream likewise).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ._symmetry import Key, Permutation, Plan, parameter_distance, permute

__all__ = ["Matching", "weight_matching"]

_RELATIVE_TOL = 1e-10


@dataclass(frozen=True)
class Matching:
    """B aligned to A: ``aligned = permute(b, permutation)``, the same function as B."""

    aligned: nn.Module
    permutation: Permutation
    distance_before: float  # ‖θ_A − θ_B‖
    distance_after: float  # ‖θ_A − σ*(θ_B)‖
    sweeps: int
    converged: bool  # the last sweep changed nothing


def weight_matching(a: nn.Module, b: nn.Module, *, residual: bool = True, seed: int = 0,
                    max_sweeps: int = 100) -> Matching:
    """Find σ* maximising Σ_W ⟨W_A, σ(W_B)⟩ by coordinate descent (Ainsworth et al. 2022) and align B."""
    distance_before = parameter_distance(a, b)  # raises unless the names and shapes agree
    plan = Plan(a)
    state_a = {k: p.detach().double() for k, p in a.named_parameters()}
    state_b = {k: p.detach().double() for k, p in b.named_parameters()}
    perm = replace(plan.identity(), residual=np.arange(plan.d_model) if residual else None)
    families = ([("residual", -1)] if residual else []) + [("mlp", l) for l in range(plan.n_layers)] + [
        ("heads", l) for l in range(plan.n_layers)]
    coupled = _coupled(plan, residual)
    rng = np.random.default_rng(seed)
    converged, sweeps = False, 0
    while not converged and sweeps < max_sweeps:
        sweeps += 1
        changed = False
        for i in rng.permutation(len(families)):
            kind, layer = families[i]
            if kind == "heads":
                new = _match_heads(plan, state_a, state_b, perm, layer)
            else:
                new = _match_family(plan, state_a, state_b, perm, (kind, layer))
            if new is not None:
                perm, changed = new, True
        converged = not (changed and coupled)  # uncoupled families reach their optimum in one step
    aligned = permute(b, perm)
    return Matching(aligned=aligned, permutation=perm, distance_before=distance_before,
                    distance_after=parameter_distance(a, aligned), sweeps=sweeps, converged=converged)


def _family(key: Key) -> Key:
    return ("heads", key[1]) if key[0] in ("query", "kv") else key


def _coupled(plan: Plan, residual: bool) -> bool:
    """Whether some weight is touched by two of the families being solved (then they must be iterated)."""
    return any(len({_family(s.key) for s in segments if residual or s.key[0] != "residual"}) > 1
               for segments in plan.segments.values())


def _similarity(plan: Plan, state_a: dict, state_b: dict, perm: Permutation, keys: tuple[Key, ...]
                ) -> dict[Key, torch.Tensor]:
    """C[key][i, j] = Σ ⟨unit i of W_A, unit j of W_B⟩ over the weights ``key`` touches, with every family
    of ``perm`` except ``keys`` applied to B. One [n, n] float64 matrix per key."""
    skip = frozenset(keys)
    sims = {}
    for name, segments in plan.segments.items():
        mine = [s for s in segments if s.key in skip]
        if not mine:
            continue
        b_other = plan.apply(name, state_b[name], perm, skip)
        for s in mine:
            rows_a = _unit_rows(state_a[name], s)  # [n, block * rest]
            rows_b = _unit_rows(b_other, s)
            sims[s.key] = sims.get(s.key, 0) + rows_a @ rows_b.T  # [n, n]
    return sims


def _unit_rows(tensor: torch.Tensor, s) -> torch.Tensor:
    """Segment ``s`` of ``tensor`` as one row per unit: [n, block * (the other axes)]."""
    return tensor.narrow(s.axis, s.offset, s.n * s.block).movedim(s.axis, 0).reshape(s.n, -1)


def _assign(cost: np.ndarray) -> tuple[np.ndarray, float]:
    """The maximising assignment of ``cost`` [n, n] (row i takes column cols[i]) and its value."""
    rows, cols = linear_sum_assignment(cost, maximize=True)
    return cols, float(cost[rows, cols].sum())


def _improves(new: float, old: float) -> bool:
    return new > old + _RELATIVE_TOL * max(1.0, abs(old))


def _match_family(plan: Plan, state_a: dict, state_b: dict, perm: Permutation, key: Key) -> Permutation | None:
    """The residual stream or one layer's MLP units re-solved; None when the objective would not rise."""
    cost = _similarity(plan, state_a, state_b, perm, (key,))[key].numpy()
    old_units = plan.units(perm, key)
    cols, value = _assign(cost)
    if not _improves(value, float(cost[np.arange(len(cols)), old_units].sum())):
        return None
    if key[0] == "residual":
        return replace(perm, residual=cols)
    return replace(perm, mlp=tuple(cols if l == key[1] else m for l, m in enumerate(perm.mlp)))


def _match_heads(plan: Plan, state_a: dict, state_b: dict, perm: Permutation, layer: int) -> Permutation | None:
    """One layer's heads re-solved as KV groups with their query heads (nested assignment)."""
    sims = _similarity(plan, state_a, state_b, perm, (("query", layer), ("kv", layer)))
    query, kv = sims[("query", layer)].numpy(), sims[("kv", layer)].numpy()  # [n_heads]^2, [n_kv]^2
    g, n_kv = plan.groups, plan.n_kv
    blocks = query.reshape(n_kv, g, n_kv, g).transpose(0, 2, 1, 3)  # [a, b, i, j]: A head a*g+i vs B head b*g+j
    inner = [[_assign(blocks[a, b]) for b in range(n_kv)] for a in range(n_kv)]
    groups, value = _assign(kv + np.array([[inner[a][b][1] for b in range(n_kv)] for a in range(n_kv)]))
    heads = np.concatenate([groups[a] * g + inner[a][groups[a]][0] for a in range(n_kv)])  # [n_heads]
    old_query, old_kv = perm.heads[layer], plan.units(perm, ("kv", layer))
    old_value = float(query[np.arange(len(old_query)), old_query].sum() + kv[np.arange(n_kv), old_kv].sum())
    if not _improves(value, old_value):
        return None
    return replace(perm, heads=tuple(heads if l == layer else h for l, h in enumerate(perm.heads)))
