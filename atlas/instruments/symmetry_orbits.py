"""Symmetry orbits: the same function far away in weight space, and two seeds aligned modulo permutation.

The Framework's *symmetry orbits* (global geometry, equivalent / distinct):
orbit([W]) = {σ(W) : f_σ(W) = f_W}. "Distance in parameter space is not distance in
function space without accounting for symmetry orbits first." Two measurements:

**Orbit** (table ``symmetry_orbits``). ``permutations`` seeded random elements σ of the
decoder's permutation group (``_symmetry.random_permutation``: MLP hidden units, attention
heads as KV groups with their query heads, the residual stream), each family alone and all
together (``families``, each of mlp | heads | residual | all). Per draw: max |f_σ(W)(x) − f_W(x)| over
the logits of a probe set (``_symmetry.logit_change``; 0 up to float rounding on the orbit) and
‖σ(θ) − θ‖₂ (``parameter_distance``), beside ‖θ‖₂. The probe set: ``probe_pairs`` of the p²
pairs of a modular-addition Lab model (a fixed seeded choice); otherwise the opening ``probe_tokens`` tokens of passages of the
corpus, domains taking turns (``atlas._scoring.budgeted``), cut to one length.

**Alignment** (tables ``symmetry_matching`` and ``symmetry_matching_chunks``, with ``other``:
a second seed of the same modular-addition recipe). Weight matching (Ainsworth et al. 2022,
"Git Re-Basin", ``_rebasin.weight_matching`` with the residual stream: coordinate descent over
families, each a linear assignment solved by ``scipy.optimize.linear_sum_assignment``) gives
σ*(θ_B), the same function as B, closest to A. Then the straight line θ(t) = (1 − t) θ_A + t θ_B
(``before``) and to σ*(θ_B) (``after``), ``points`` evenly spaced t, each point scored on the
run's held-out pairs (the answer's cross-entropy at the last position), and the barrier both ways
of the ``interpolation`` instrument (``interpolation_barrier``: max_t L(t) − (L_A + L_B)/2, and the
height above the chord). ``symmetry_matching_chunks`` repeats the barrier on ``chunks`` disjoint,
seeded parts of the held-out pairs (the same parts for every seed: the split is the recipe's), so
a prediction can resample them. Entezari et al. (2022) conjecture that the barrier between SGD
solutions vanishes once permutations are accounted for.

Cost (modular-addition, p = 97, width 64, 1 layer): two forward passes on the probe per draw and
family, then (with ``other``) matching (0.03 s) and 2 × ``points`` forwards on the 6,586 held-out
pairs. On one thread: 13 ms per forward on 1,024 pairs, 0.1 s on the held-out pairs; two threads on
this 2-core machine under load (4-5) are ten times slower: a Lab model is measured on one thread
(``_labruns.one_thread``). The quick profile draws only the ``all`` family, on 512 probe pairs, with
5 points per line.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Annotated

import numpy as np
import pandas as pd
import torch

from .._bounds import at_least, comma_list
from .._corpus import Corpus
from .._errors import BadInput
from .._models import LoadedModel
from .._scoring import budgeted
from .._progress import progress_bar
from ._labruns import heldout_nll, lab_run, modular_run, one_thread
from ._rebasin import weight_matching
from ._registry import instrument
from ._symmetry import logit_change, parameter_distance, permute, random_permutation
from .interpolation import _Reparametrised, _state, interpolation_barrier

__all__ = ["measure_symmetry_orbits"]

FAMILIES = {"mlp": (True, False, False), "heads": (False, True, False), "residual": (False, False, True),
            "all": (True, True, True)}  # family -> (mlp, heads, residual) of random_permutation
#: the ``families`` setting: a comma list of FAMILIES
FAMILY_LIST = comma_list(str, choices=tuple(FAMILIES))


@instrument("symmetry_orbits", version="1", measures=("symmetry_orbits", "symmetry_matching", "symmetry_matching_chunks"),
            terms=("symmetry_orbits",), models=("other",),
            split_refusal="it permutes copies of the parameters and evaluates the model at them, which needs every "
                          "parameter held on a device, not offloaded")
def measure_symmetry_orbits(lm: LoadedModel, corpus: Corpus, *, other: LoadedModel | None = None,
                            permutations: Annotated[int, at_least(1)] = 8,
                            families: Annotated[str, FAMILY_LIST] = "mlp,heads,residual,all",
                            probe_pairs: Annotated[int, at_least(1)] = 1024, probe_tokens: Annotated[int, at_least(2)] = 64,
                            points: Annotated[int, at_least(3)] = 11, chunks: Annotated[int, at_least(1)] = 8,
                            progress: bool = True) -> dict[str, pd.DataFrame]:
    """Random permutations of the model (same function?) and, with ``other``, the barrier before and after matching.

    Settings:
        other: a second seed of the same modular-addition Lab recipe, aligned to the model by weight matching
        permutations: seeded random permutations drawn per family
        families: comma-separated families permuted, each on its own (mlp, heads, residual) or together (all)
        probe_pairs: modular-addition pairs (a seeded choice among all p²) in the probe of a Lab model
        probe_tokens: tokens per passage in the probe of a model that is no modular-addition Lab run
        points: evenly spaced t on each interpolation line, both ends included
        chunks: disjoint parts of the held-out pairs, each with its own barrier
    """
    chosen = FAMILY_LIST.parse(families, "families")
    lab, probe = _probe(lm, corpus, probe_pairs, probe_tokens)  # probe [B, T]
    with one_thread() if lab else nullcontext():
        return _measure(lm, other, probe, chosen, permutations, points, chunks, progress)


def _measure(lm: LoadedModel, other: LoadedModel | None, probe: torch.Tensor, chosen: list[str], permutations: int,
             points: int, chunks: int, progress: bool) -> dict[str, pd.DataFrame]:
    """The three tables: the orbit draws on ``probe``, then (with ``other``) the alignment."""
    weight_norm = float(sum(p.detach().double().pow(2).sum() for p in lm.model.parameters())) ** 0.5
    rows = []
    for draw in progress_bar(range(permutations), desc=f"symmetry orbits {lm.name}", unit="draws", enabled=progress):
        for family in chosen:
            mlp, heads, residual = FAMILIES[family]
            moved = permute(lm.model, random_permutation(lm.model, draw, mlp=mlp, heads=heads, residual=residual))
            rows.append({"draw": draw, "family": family, "max_abs_dlogit": logit_change(lm.model, moved, probe),
                         "parameter_distance": parameter_distance(lm.model, moved), "weight_norm": weight_norm})
    matching, parts = (_alignment(lm, other, probe, points, chunks) if other is not None
                       else (_empty(_MATCHING), _empty(_CHUNKS)))
    return {"symmetry_orbits": pd.DataFrame(rows), "symmetry_matching": matching, "symmetry_matching_chunks": parts}


_MATCHING = {"alignment": str, "definition": str, "barrier": float, "t_at_max": float, "parameter_distance": float,
             "loss_model": float, "loss_other": float, "max_abs_dlogit_other": float, "n_pairs": int}
_CHUNKS = {"alignment": str, "definition": str, "chunk": int, "barrier": float, "n_pairs": int}


def _empty(columns: dict) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})


def _probe(lm: LoadedModel, corpus: Corpus, probe_pairs: int, probe_tokens: int) -> tuple[bool, torch.Tensor]:
    """(True, ``probe_pairs`` of the p² pairs [n, 3]) for a modular-addition Lab model, else (False, passage
    openings of one length [B, T])."""
    try:
        inputs = modular_run(lm, "symmetry_orbits")[1].inputs  # [p², 3]
        return True, inputs[np.sort(np.random.default_rng(0).permutation(len(inputs))[:probe_pairs])].to(lm.device)
    except BadInput:
        chosen = [ids[:probe_tokens] for _, ids in budgeted(lm, corpus, 8 * probe_tokens, probe_tokens)]
        width = min(len(ids) for ids in chosen)
        return False, torch.tensor([ids[:width] for ids in chosen], device=lm.device)


def _alignment(lm: LoadedModel, other: LoadedModel, probe: torch.Tensor, points: int, chunks: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Weight matching of ``other`` to ``lm`` and the held-out loss along both lines, whole and per chunk."""
    checkpoint, task = modular_run(lm, "symmetry_orbits")
    if lab_run(other, "symmetry_orbits").split != checkpoint.split:
        raise BadInput(f"{other.name} was trained on another split than {lm.name}: give a second seed of the same "
                       f"recipe ({checkpoint.recipe.name}) so that both are scored on the same held-out pairs")
    matched = weight_matching(lm.model, other.model, residual=True)
    heldout = task.heldout_idx  # [n]
    parts = np.array_split(np.random.default_rng(0).permutation(len(heldout)), chunks)  # chunk -> positions
    ts = np.linspace(0.0, 1.0, points)
    whole, per_chunk = [], []
    theta_a = _state(lm.model)
    for alignment, model_b in (("before", other.model), ("after", matched.aligned)):
        theta_b = _state(model_b)
        nll = np.stack([heldout_nll(_Reparametrised(lm.model, _lerp(theta_a, theta_b, t)), task, heldout,
                                    lm.device).numpy() for t in ts])  # [points, n]
        barrier = interpolation_barrier(pd.DataFrame({"t": ts, "loss": nll.mean(axis=1)}))
        distance = matched.distance_before if alignment == "before" else matched.distance_after
        dlogit = logit_change(other.model, model_b, probe)
        for row in barrier.itertuples():
            whole.append({"alignment": alignment, "definition": row.definition, "barrier": row.barrier,
                          "t_at_max": row.t_at_max, "parameter_distance": distance, "loss_model": nll[0].mean(),
                          "loss_other": nll[-1].mean(), "max_abs_dlogit_other": dlogit, "n_pairs": len(heldout)})
        for c, positions in enumerate(parts):
            chunk = interpolation_barrier(pd.DataFrame({"t": ts, "loss": nll[:, positions].mean(axis=1)}))
            per_chunk += [{"alignment": alignment, "definition": r.definition, "chunk": c, "barrier": r.barrier,
                           "n_pairs": len(positions)} for r in chunk.itertuples()]
    return pd.DataFrame(whole), pd.DataFrame(per_chunk)


def _lerp(theta_a: dict, theta_b: dict, t: float) -> dict:
    """θ(t) = (1 − t) θ_A + t θ_B for floating tensors (``torch.lerp``: exact at both ends); others from A."""
    return {k: torch.lerp(a, theta_b[k], float(t)) if a.is_floating_point() else a for k, a in theta_a.items()}
