"""Algorithmic branches: do two seeds at the same loss represent the task alike?

The Framework's *algorithmic branches* (global geometry, shared / disjoint): "two checkpoint
paths can converge to similar loss ... while encoding different internal computations";
branch i = {θ : L(θ) ≈ L* and A(θ) = A_i}, A an algorithmic descriptor such as a CKA
cluster. Here A is the representation geometry, compared by debiased linear CKA
(Kornblith et al. 2019; the unbiased HSIC of Song et al. 2012, ``_cka``) between two runs of
one modular-addition Lab recipe that differ only in their seed: the model's run (A) and
``other``'s (B).

**Matched loss.** Each run's checkpoints carry their held-out loss (the run's trajectory).
The common target L* is ``target_loss``, or by default the lowest held-out loss both runs
reach, max(min L_A, min L_B); in each run the checkpoint whose held-out loss is closest to L*
on a log scale (|log L − log L*|, the earliest on a tie) is its point at matched loss. The
given checkpoint itself need not be that one: the instrument reads the run.

**Comparisons** (table ``algorithmic_branches``, one row per comparison and decoder layer):
``between_seeds`` — A and B at matched loss; ``within_model`` / ``within_other`` — each at
matched loss against the checkpoint just before it in its own run (adjacent checkpoints: the
same solution a moment apart, a near-copy: CKA ~ 1); ``peak_model`` / ``peak_other`` — each at
matched loss against its own run's checkpoint of highest held-out loss before it (in grokking the
memorisation peak, where the training pairs are learnt and the held-out ones are not: Power et al.
2022, Nanda et al. 2023; the initial weights if the loss only fell): a known change of computation
within one run, the reference against which two seeds' difference can be weighed. Representations:
the residual stream after each layer (``_cka.layer_representations``) at the last position
(``pooling="last"``, the ``=`` token where the answer is read out; ``mean`` averages the
three positions), on a fixed probe set of ``probes`` held-out pairs (a seeded choice, the
same for every seed: the split is the recipe's). Each CKA has a permutation null
(``_cka.cka_test``: rows of one representation permuted, one-sided p with the +1 correction).
Table ``algorithmic_branches_chunks`` repeats the CKA on ``chunks`` disjoint parts of the
probe set, so that a prediction can resample probe pairs (debiased CKA is not defined on a
bootstrap resample with repeated rows: repeated inputs look perfectly similar).

Cost (modular-addition, p = 97, width 64; one thread): six checkpoint loads and forwards on
512 pairs, 5 CKA tests of 199 permutations on 512 × 512 Gram matrices: a few seconds.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import pandas as pd

from .._bounds import at_least
from .._corpus import Corpus
from .._errors import BadInput, SettingsError
from .._models import LoadedModel, load_model
from ._cka import cka, cka_test, layer_representations
from ._labruns import modular_run, one_thread
from ._registry import instrument

__all__ = ["matched_checkpoints", "measure_algorithmic_branches"]


def matched_checkpoints(losses_a: pd.Series, losses_b: pd.Series, target: float = 0.0) -> tuple[int, int, float]:
    """(step of A, step of B, L*): each run's checkpoint whose loss is closest to L* in log; ``losses_*`` are
    held-out losses indexed by step (ascending); ``target`` 0 means the lowest loss both runs reach."""
    target = target if target > 0 else max(float(losses_a.min()), float(losses_b.min()))
    steps = [int(np.abs(np.log(s.to_numpy(float)) - np.log(target)).argmin()) for s in (losses_a, losses_b)]
    return int(losses_a.index[steps[0]]), int(losses_b.index[steps[1]]), target


@instrument("algorithmic_branches", version="2", measures=("algorithmic_branches", "algorithmic_branches_chunks"),
            terms=("algorithmic_branches",), models=("other",), runs_split=True)
def measure_algorithmic_branches(lm: LoadedModel, corpus: Corpus, *, other: LoadedModel | None = None,
                                 target_loss: Annotated[float, at_least(0)] = 0.0, probes: Annotated[int, at_least(4)] = 512,
                                 chunks: Annotated[int, at_least(1)] = 8, pooling: Literal["last", "mean"] = "last",
                                 permutations: Annotated[int, at_least(1)] = 999,
                                 progress: bool = True) -> dict[str, pd.DataFrame]:
    """CKA per layer between two seeds at matched held-out loss, and within each seed against its adjacent
    checkpoint and its held-out loss peak.

    Settings:
        other: a second seed of the same modular-addition Lab recipe
        target_loss: the matched held-out loss L* (nats); 0: the lowest loss both runs reach
        probes: held-out pairs in the probe set (a seeded choice, the same for every seed)
        chunks: disjoint parts of the probe set, each with its own CKA (at least 4 pairs each)
        pooling: the representation of a pair: the last position's residual stream, or the mean over positions
        permutations: permutations of the null per CKA test
    """
    if other is None:
        raise SettingsError("algorithmic_branches compares two runs: pass other=<a second seed of the same Lab "
                            "recipe>, e.g. other=lab:modular-addition@1")
    if probes < 4 * chunks:
        raise SettingsError(f"probes >= 4 * chunks is needed (debiased CKA needs 4 inputs a chunk), not {probes} "
                            f"probes in {chunks} chunks")
    run_a, task = modular_run(lm, "algorithmic_branches")
    run_b, _ = modular_run(other, "algorithmic_branches")
    if run_b.split != run_a.split:
        raise BadInput(f"{other.name} was trained on another split than {lm.name}: give a second seed of the same "
                       f"recipe ({run_a.recipe.name}) so that both see the same held-out pairs")
    losses = [_losses(run) for run in (run_a, run_b)]  # step -> held-out loss, checkpoints on disk
    step_a, step_b, target = matched_checkpoints(*losses, target=target_loss)
    picked = {"a": step_a, "a_prev": _adjacent(losses[0], step_a), "a_peak": _peak(losses[0], step_a, lm.name),
              "b": step_b, "b_prev": _adjacent(losses[1], step_b), "b_peak": _peak(losses[1], step_b, other.name)}
    paths = {"a": dict(run_a.checkpoints), "b": dict(run_b.checkpoints)}
    heldout = task.heldout_idx.numpy()
    chosen = np.sort(np.random.default_rng(0).choice(heldout, size=min(probes, len(heldout)), replace=False))
    if len(chosen) < 4 * chunks:
        raise BadInput(f"{lm.name}: {len(chosen)} held-out pairs cannot fill {chunks} chunks of at least 4 (debiased "
                       "CKA needs 4 inputs); use fewer chunks or a recipe with more held-out pairs")
    inputs = task.inputs[chosen]  # [n, 3]
    with one_thread():  # a tiny Lab model (``_labruns``)
        reps = {k: layer_representations(load_model(str(paths[k[0]][s]), device=lm.device).model,
                                         inputs.to(lm.device), pooling=pooling) for k, s in picked.items()}  # [L, n, d]
    parts = np.array_split(np.random.default_rng(1).permutation(len(chosen)), chunks)
    rows, per_chunk = [], []
    for comparison, (x, y) in {"between_seeds": ("a", "b"), "within_model": ("a", "a_prev"),
                               "within_other": ("b", "b_prev"), "peak_model": ("a", "a_peak"),
                               "peak_other": ("b", "b_peak")}.items():
        run_x, run_y = losses["ab".index(x[0])], losses["ab".index(y[0])]  # the run each checkpoint belongs to
        for layer in range(len(reps[x])):
            value, p = cka_test(reps[x][layer], reps[y][layer], n_permutations=permutations, seed=layer)
            rows.append({"comparison": comparison, "layer": layer, "step_a": picked[x], "step_b": picked[y],
                         "loss_a": float(run_x[picked[x]]), "loss_b": float(run_y[picked[y]]), "target_loss": target,
                         "cka": value, "p_value": p, "n": len(chosen)})
            per_chunk += [{"comparison": comparison, "layer": layer, "chunk": c,
                           "cka": cka(reps[x][layer][part], reps[y][layer][part]), "n": len(part)}
                          for c, part in enumerate(parts)]
    return {"algorithmic_branches": pd.DataFrame(rows), "algorithmic_branches_chunks": pd.DataFrame(per_chunk)}


def _losses(run) -> pd.Series:
    trajectory = run.trajectory()  # the whole run: a LabError when a checkpoint it lists is missing
    if trajectory is None:
        raise BadInput(f"the Lab run in {run.run_dir} has no trajectory yet (unfinished); finish it with "
                       "`atlas train RECIPE --seed S`")
    kept = trajectory.sort_values("step")
    if len(kept) < 2:
        raise BadInput(f"the Lab run in {run.run_dir} has {len(kept)} checkpoint(s); adjacent checkpoints need 2")
    return pd.Series(kept["heldout_loss"].to_numpy(float), index=kept["step"].to_numpy(int))


def _peak(losses: pd.Series, step: int, name: str) -> int:
    """The checkpoint of highest held-out loss before ``step`` in its run (the earliest on a tie)."""
    before = losses[losses.index < step]
    if before.empty:
        raise BadInput(f"{name}: its checkpoint at matched loss (step {step}) is its run's first: no earlier "
                       "checkpoint to compare it with; give a lower target_loss or a run with more checkpoints")
    return int(before.idxmax())


def _adjacent(losses: pd.Series, step: int) -> int:
    """The checkpoint just before ``step`` in its run (just after it, for the first checkpoint)."""
    steps = list(losses.index)
    i = steps.index(step)
    return int(steps[i - 1] if i > 0 else steps[1])
