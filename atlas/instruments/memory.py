"""Memory: what the path of training leaves in the weights, seen where the loss cannot see it.

The Framework's *memory* (navigator, deep / shallow): "path dependency encoded in
weights. Not the weights themselves: the history of how the model traveled through the
loss landscape during training. Cannot be measured independently from viscosity in a
frozen deployed model" (formula: "training trajectory integral; basin selection via
initialization and curriculum"). A frozen model has no history, so memory is measured
on trajectories the Lab trains: the same architecture under two curricula, several
seeds each, compared at *matched held-out loss*. Whatever still tells the curricula
apart there is memory; the Hessian spectrum (the Framework's *viscosity*) is one of
the readouts, so the seed's open experiment (P12) asks whether the curricula differ in
it more than seeds do.

Operationalisation. The model is a Lab checkpoint of a ``corpus_lm`` recipe whose
``curriculum`` is a domain order (e.g. ``lab:memory-lm``: technical documentation, then
poetry); it names the recipe, not an endpoint. Curriculum A is that recipe; curriculum B
is its reverse order (``other="reversed"``) or a shuffled stream over the same domains
(``other="shuffled"``). Seeds 0..``seeds``-1 of each are trained through the Lab resolver
CISP passes in (``atlas.lab.LabRuns``: deterministic, reused from the Lab cache
``$ATLAS_CACHE/lab``, and each training stored as a run of its own). Every curriculum has
trained on every domain once A's last phase has begun, so endpoints are taken from the
checkpoints at or after that step: the target is the highest of the runs' lowest
held-out losses there (every run reaches it), and each run's endpoint is its checkpoint
closest to the target on the way down (at or before the run's own lowest held-out loss:
a small corpus is memorised after that, and a checkpoint on the rising side would match
the loss in another regime); ``matched`` says it lies within ``tolerance`` nats. Held-out loss:
the trajectory's token-weighted mean NLL on the recipe's held-out windows (both
domains; ``atlas.lab._data``).

Readouts per endpoint, all on the recipe's held-out windows (the session corpus is not
used: the endpoints are matched on this split):

    memory          heldout_loss, target, gap; the Hessian of the held-out loss: its
                    extreme eigenvalues lambda_max, lambda_min (Lanczos, ``_lanczos``,
                    residual-tested: ``lambda_max_converged`` and ``lambda_min_converged``;
                    the top converges first) and Hutchinson's trace with its
                    standard error (``hessian.BlockHessian``: double backward, eager
                    attention); the run's training wall time as stored
    memory_domains  the loss on each domain's held-out windows (the per-domain profile)
    memory_pairs    per pair of endpoints: parameter distance |theta_a - theta_b|, mean
                    debiased linear CKA over decoder layers of the windows' mean-pooled
                    residual streams (``_cka``, Kornblith et al. 2019), the Euclidean
                    distance of the per-domain loss profiles, and |log lambda_max| and
                    |log trace| gaps (null where a value is <= 0)

Reading. Endpoints of one seed share their initial weights across curricula (the
initialisation is seeded), endpoints of one curriculum do not: parameter distance and CKA
compare pairs of unlike kinds; spectra (permutation invariant) do not have that confound.

Cost (``lab:memory-lm``, 12 Lanczos steps and 8 trace probes on the 1658 held-out tokens): 4 seeds
x 2 curricula train cold in 73 CPU s on one thread (119 s wall on this shared 2-core machine at a
load of 4; the instrument's run 111 s wall); warm (checkpoints in the Lab cache), 27 s wall, the
Hessian-vector products most of it. The quick profile takes 8 seeds (P12's interval is over
seeds): twice that, about 150 CPU s cold and 55 s warm (scaled from these, not timed).
"""

from __future__ import annotations

from itertools import combinations
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import torch

from .._anatomy import eager_attention
from .._bounds import above, at_least
from .._corpus import Corpus
from .._errors import SettingsError
from .._models import LoadedModel, load_model
from .._scoring import token_nll
from .._progress import progress_bar
from ..lab import LabRuns, Recipe, lab_checkpoint
from ..lab._data import build_task
from ..lab._model import tokenizer_for
from ..lab._recipe import CorpusData
from ._cka import cka, layer_representations
from ._lanczos import hutchinson, lanczos, rademacher
from ._registry import instrument
from .hessian import BlockHessian

__all__ = ["curricula", "matched_endpoints", "measure_memory"]


def curricula(recipe: Recipe, other: str) -> dict[str, Recipe]:
    """{label: recipe} of the two curricula: the recipe's domain order, and its reverse or a shuffled stream."""
    data = recipe.data
    if not isinstance(data, CorpusData) or recipe.kind != "corpus_lm" or not isinstance(data.curriculum, tuple):
        found = getattr(data, "curriculum", None)
        raise SettingsError(f"memory compares curricula of a corpus_lm recipe whose curriculum is a domain order; "
                            f"{recipe.name!r} has kind {recipe.kind} and curriculum {found!r}: give a Lab model "
                            "such as lab:memory-lm")
    if len(data.curriculum) < 2:
        raise SettingsError(f"recipe {recipe.name!r} orders a single domain: a curriculum needs two or more")
    order = list(data.curriculum)
    second = list(reversed(order)) if other == "reversed" else "shuffled"
    return {">".join(order): recipe,
            ">".join(second) if other == "reversed" else "shuffled": recipe.updated({"data": {"curriculum": second}})}


def matched_endpoints(trajectories: dict, first_step: int) -> tuple[float, dict]:
    """(target, {run: (step, heldout_loss)}): the highest of the runs' lowest held-out losses at steps >=
    ``first_step``, and each run's checkpoint there closest to it on the way down (at or before the run's
    lowest held-out loss; ties: the earlier step)."""
    window = {run: t[t["step"] >= first_step].reset_index(drop=True) for run, t in trajectories.items()}
    target = max(float(t["heldout_loss"].min()) for t in window.values())
    chosen = {}
    for run, t in window.items():
        descending = t.iloc[:int(t["heldout_loss"].to_numpy(float).argmin()) + 1]
        row = descending.iloc[int(np.argmin(np.abs(descending["heldout_loss"].to_numpy(float) - target)))]
        chosen[run] = (int(row["step"]), float(row["heldout_loss"]))
    return target, chosen


def _heldout(recipe: Recipe):
    """Held-out windows of the recipe as (input_ids [n, T], attention_mask [n, T], domains [n])."""
    tokenizer, doc_start_id, pad_id = tokenizer_for(recipe)
    windows = build_task(recipe, tokenizer, doc_start_id, pad_id).heldout_windows
    width = max(len(ids) for ids, _, _ in windows)
    ids, mask = torch.full((len(windows), width), pad_id), torch.zeros(len(windows), width, dtype=torch.long)
    for row, (w, _, _) in enumerate(windows):
        ids[row, :len(w)], mask[row, :len(w)] = torch.tensor(w), 1
    return ids, mask, np.array([d for _, _, d in windows])


def _spectrum(model, ids, mask, lanczos_steps: int, samples: int, tol: float) -> dict:
    params = list(model.parameters())
    with eager_attention(model), torch.enable_grad():
        loss = token_nll(model, ids, mask).sum() / mask[:, 1:].sum()
        H = BlockHessian(params, loss)
        generator = torch.Generator().manual_seed(0)
        found, _ = lanczos(H, rademacher(H.n, generator, "cpu"), lanczos_steps)
        trace, stderr = hutchinson(H, H.n, samples, generator, "cpu")
    ok = found.converged(tol)
    return {"lambda_max": float(found.values[-1]), "lambda_min": float(found.values[0]),
            "lambda_max_converged": bool(ok[-1]), "lambda_min_converged": bool(ok[0]), "trace": float(trace),
            "trace_stderr": float(stderr),
            "n_hvp": H.count, "n_params": H.n}


def _log_gap(a: float, b: float) -> float:
    return abs(np.log(a) - np.log(b)) if a > 0 and b > 0 else np.nan


@instrument("memory", version="1", measures=("memory", "memory_domains", "memory_pairs"), terms=("memory",))
def measure_memory(lm: LoadedModel, corpus: Corpus, *, other: Literal["reversed", "shuffled"] = "reversed",
                   seeds: Annotated[int, at_least(2)] = 4, tolerance: Annotated[float, above(0)] = 0.05,
                   lanczos_steps: Annotated[int, at_least(2)] = 20, hutchinson_samples: Annotated[int, at_least(2)] = 20,
                   tol: Annotated[float, above(0)] = 1e-3, lab: LabRuns, progress: bool = True) -> dict[str, pd.DataFrame]:
    """Endpoints of two curricula at matched held-out loss: Hessian spectra, domain losses, distances, CKA.

    Settings:
        other: the second curriculum: the Lab recipe's domain order reversed, or shuffled over its domains
        seeds: seeds trained per curriculum (0, 1, ...), each a Lab run reused from the cache
        tolerance: nats from the common target loss within which an endpoint counts as matched
        lanczos_steps: Lanczos steps (Hessian-vector products) for the extreme eigenvalues
        hutchinson_samples: Rademacher probes of the Hessian trace (at least 2: a standard error)
        tol: relative residual under which a Ritz value counts as converged
    """
    if lm.path is None:
        raise SettingsError(f"{lm.name} is not a Lab checkpoint: memory needs a trajectory; give a Lab model "
                            "such as lab:memory-lm")
    recipes = curricula(lab_checkpoint(lm.path).recipe, other)
    first = recipes[next(iter(recipes))]
    phases = len(first.data.curriculum)
    last_phase = (phases - 1) * first.steps // phases
    lab.prepare((r, s) for r in recipes.values() for s in range(seeds))  # side by side on the cores
    runs = {(label, s): lab.train(r, s) for label, r in recipes.items() for s in range(seeds)}  # stored as runs
    target, chosen = matched_endpoints({k: r.trajectory for k, r in runs.items()}, last_phase)
    ids, mask, domains = _heldout(first)  # [n, T], [n, T], [n]
    rows, domain_rows, weights, reps = [], [], {}, {}
    for (label, s), run in progress_bar(runs.items(), desc=f"memory {lm.name}", unit="runs", enabled=progress):
        step, loss = chosen[label, s]
        endpoint = load_model(str(dict(run.checkpoints)[step]), device="cpu", dtype="float32").model
        with torch.no_grad():
            nll = token_nll(endpoint, ids, mask)  # [n, T-1]
        counts = mask[:, 1:].sum(dim=1)  # [n]
        for d in dict.fromkeys(domains):
            rows_d = torch.as_tensor(domains == d)
            domain_rows.append({"curriculum": label, "seed": s, "domain": d,
                                "loss": float(nll[rows_d].sum() / counts[rows_d].sum()),
                                "n_tokens": int(counts[rows_d].sum())})
        rows.append({"curriculum": label, "seed": s, "step": step, "heldout_loss": loss, "target": target,
                     "gap": loss - target, "matched": abs(loss - target) <= tolerance,
                     **_spectrum(endpoint, ids, mask, lanczos_steps, hutchinson_samples, tol),
                     "n_tokens": int(counts.sum()), "train_wall_s": float(run.wall_s)})
        weights[label, s] = torch.cat([p.detach().reshape(-1) for p in endpoint.parameters()])
        reps[label, s] = layer_representations(endpoint, ids, mask)  # [L, n, d]
    table = pd.DataFrame(rows)
    spectra = table.set_index(["curriculum", "seed"])
    profiles = pd.DataFrame(domain_rows).pivot_table(index=["curriculum", "seed"], columns="domain", values="loss")
    pairs = []
    for a, b in combinations(runs, 2):
        pairs.append({"curriculum_a": a[0], "seed_a": a[1], "curriculum_b": b[0], "seed_b": b[1],
                      "same_curriculum": a[0] == b[0],
                      "parameter_distance": float((weights[a] - weights[b]).norm()),
                      "cka": float(np.mean([cka(x, y) for x, y in zip(reps[a], reps[b])])),
                      "profile_distance": float(np.linalg.norm(profiles.loc[a] - profiles.loc[b])),
                      "log_lambda_gap": _log_gap(spectra.loc[a, "lambda_max"], spectra.loc[b, "lambda_max"]),
                      "log_trace_gap": _log_gap(spectra.loc[a, "trace"], spectra.loc[b, "trace"])})
    return {"memory": table, "memory_domains": pd.DataFrame(domain_rows), "memory_pairs": pd.DataFrame(pairs)}
