"""Stiffness: does the landscape spring back after the weights are pushed, or does the push stay?

The Framework's *flexible / stiff* (terrain): "landscape response to perturbation.
Flexible means deformation is permanent (plastic regime). Stiff means deformation is
recoverable (elastic regime)" (Kirkpatrick et al. 2017). Operationalised as a
perturb-and-recover probe at the model θ*:

1. push θ* along a random direction d, filter-normalised (Li et al. 2018): a Gaussian
   tensor per parameter, each filter -- an output unit: a row of an ``nn.Linear`` weight
   (stored [out, in]), a column of GPT-2's ``Conv1D`` weight (stored [in, out]), one
   token's embedding -- rescaled to the norm of the same filter of θ* (``filter_axes``);
   parameters of one dimension (biases, norm gains) are not moved, as in Li et al.'s
   figures. θ' = θ* + r d, so r is the relative size of the push per filter;
2. measure the loss rise L(θ') - L(θ*);
3. take ``steps`` plain gradient-descent steps θ <- θ - lr ∇L(θ) on the same data from
   θ', and the same steps from θ* (the control: on a small batch the unperturbed model
   descends too, and only what differs from the control is recovery).

Table ``stiffness``, one row per (direction, radius):

    rise                L(θ') - L(θ*)
    recovered           1 - (L(θ'_k) - L(θ*_k)) / rise: the share of the rise the steps
                        undid beyond the control; 1 = stiff (elastic), 0 = flexible
                        (plastic). Null where the push did not raise the loss (radius 0,
                        or a push that lowered it: no rise to recover), with the reason in
                        ``recovered_undefined``
    distance_perturbed  |θ' - θ*| = r |θ*| over the moved parameters
    distance_after      |θ'_k - θ*_k|: how far the perturbed run stays from the control
    returned            1 - distance_after / distance_perturbed: the share of the push
                        the weights themselves undid (null at radius 0)
    distance_to_start   |θ'_k - θ*|, the distance back to the original weights

A small ``returned`` beside a large ``recovered`` says the loss came back along the few
steep directions while the push stays in the many flat ones. Radius 0 returns exactly
to the control (θ* + 0 d is θ* bit for bit, and the steps repeat the same
arithmetic: tested).

Method. Loss: token-weighted mean NLL on ``max_tokens`` tokens of passages taken with
the domains in turn (``atlas._scoring.token_budget``), BOS policy ``prepend``. Every
point is a dict of tensors evaluated with ``torch.func.functional_call``
(``atlas.instruments._descent``): the loaded model is never written to. Directions come from a generator seeded with the direction's
number (0, 1, ...), so a run is reproducible on any device. Summary
``stiffness_radii``: per radius, means over directions with 95% bootstrap (BCa)
CIs over directions.

Scale (SmolLM2-135M, 256 tokens, 3 steps): the default lr = 0.004 lowers the control's
loss by about 0.15 nats; radii 0.05 / 0.1 / 0.2 raise the loss by about 0.09 / 0.6 / 3.3
nats, of which about 0.6 is recovered at 0.1 and 0.2 (0.05 is within the batch's noise),
while the weights return a share below 1e-6 of the push. lr = 0.1 diverges.

Cost (quick profile: radii 0.05 and 0.1, 2 directions, 2 steps, 128 tokens): 42 CPU
seconds on one thread under a load of 7-8 (87 s wall), about 9 s wall idle (scaled as
in ``smoothness``).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .._bounds import above, at_least, comma_list
from .._corpus import Corpus
from .._models import LoadedModel
from .._scoring import token_budget
from .._stats import bootstrap_ci
from .._progress import progress_bar
from ._descent import Point, Probe, distance, start_point
from ._registry import instrument

__all__ = ["filter_axes", "filter_normalised_direction", "measure_stiffness", "radius_stiffness"]


def filter_axes(model: nn.Module) -> dict[str, int]:
    """{parameter name: the axis indexing its filters (output units)}: 1 for GPT-2's ``Conv1D`` weights (stored
    [in, out]), 0 for the rest (``nn.Linear`` [out, in], embeddings [vocab, d])."""
    columns = {id(m.weight) for m in model.modules() if isinstance(m, Conv1D)}
    return {name: 1 if id(p) in columns else 0 for name, p in model.named_parameters()}


def filter_normalised_direction(theta: Point, axes: dict[str, int], seed: int) -> Point:
    """A Gaussian direction with each filter (a slice along ``axes[name]``) scaled to the norm of θ's same
    filter; 1-D tensors zero."""
    gen = torch.Generator().manual_seed(seed)
    direction = {}
    for name, t in theta.items():
        if t.dim() < 2:
            direction[name] = torch.zeros_like(t)
            continue
        d = torch.randn(t.shape, generator=gen, dtype=torch.float32).to(device=t.device, dtype=t.dtype)
        within = [i for i in range(t.dim()) if i != axes[name]]  # the dimensions of one filter
        norm = lambda x: torch.linalg.vector_norm(x, dim=within, keepdim=True)  # noqa: E731  [filters] on its axis
        d.mul_(norm(t) / norm(d))
        direction[name] = d
    return direction


#: the ``radii`` setting: a comma list of push sizes, e.g. "0.01,0.05"
RADII = comma_list(float, at_least(0))


def radius_stiffness(table: pd.DataFrame, *, n_resamples: int, seed: int = 0) -> pd.DataFrame:
    """Per radius: mean rise, recovered share and returned share over directions, 95% bootstrap CIs over
    directions (schema ``stiffness_radii``)."""
    rows = []
    for radius, g in table.groupby("radius", sort=True):
        row = {"radius": float(radius), "n_directions": len(g), "rise": float(g["rise"].mean())}
        for name in ("recovered", "returned"):
            values = g[name].dropna().to_numpy(float)
            mean = float(values.mean()) if len(values) else float("nan")
            lo, hi = (bootstrap_ci((values,), np.mean, paired=False, n_resamples=n_resamples, seed=seed)
                      if len(values) else (float("nan"), float("nan")))
            row.update({name: mean, f"{name}_ci_low": lo, f"{name}_ci_high": hi})
        rows.append(row)
    return pd.DataFrame(rows)


def _undefined(radius: float, rise: float) -> str | None:
    """Why the share of the rise recovered is undefined (None where it is defined: the push raised the loss)."""
    if radius == 0:
        return "no push (radius 0)"
    return None if rise > 0 else "the push did not raise the loss (no rise to recover)"


@instrument("stiffness", version="2", measures=("stiffness",), summaries={"stiffness_radii": radius_stiffness},
            terms=("flexible_stiff",))
def measure_stiffness(lm: LoadedModel, corpus: Corpus, *, radii: Annotated[str, RADII] = "0.05,0.1,0.2",
                      directions: Annotated[int, at_least(1)] = 3, steps: Annotated[int, at_least(1)] = 3,
                      lr: Annotated[float, above(0)] = 0.004, max_tokens: Annotated[int, at_least(1)] = 256,
                      batch_size: Annotated[int, at_least(1)] = 8,
                      progress: bool = True) -> dict[str, pd.DataFrame]:
    """Perturb along filter-normalised random directions, descend, measure what comes back (schema ``stiffness``).

    Settings:
        radii: comma list of push sizes, relative to each filter's norm (0 returns exactly to the control)
        directions: random directions, each from a generator seeded with its number
        steps: plain gradient-descent steps after the push (and for the control)
        lr: the gradient-descent step size
        max_tokens: scored tokens of the loss, passages taken with the domains in turn
        batch_size: passages per forward pass
    """
    radius_list = RADII.parse(radii, "radii")
    probe = Probe(lm, token_budget(lm, corpus, max_tokens), batch_size)
    start, axes = start_point(lm), filter_axes(lm.model)
    loss_start = probe.loss(start)
    control = probe.descend(start, steps, lr)
    loss_control = probe.loss(control)
    rows = []
    with progress_bar(total=directions * len(radius_list), desc=f"stiffness {lm.name}", unit="probes",
                      enabled=progress) as bar:
        for number in range(directions):
            direction = filter_normalised_direction(start, axes, seed=number)
            for radius in radius_list:
                pushed = {k: start[k] + radius * direction[k] for k in start}
                loss_pushed = probe.loss(pushed)
                after = probe.descend(pushed, steps, lr)
                loss_after = probe.loss(after)
                rise, moved, stays = loss_pushed - loss_start, distance(pushed, start), distance(after, control)
                rows.append({"direction": number, "radius": radius, "loss_start": loss_start,
                             "loss_perturbed": loss_pushed, "loss_recovered": loss_after, "loss_control": loss_control,
                             "rise": rise,
                             "recovered": 1 - (loss_after - loss_control) / rise if rise > 0 else float("nan"),
                             "recovered_undefined": _undefined(radius, rise),
                             "distance_perturbed": moved, "distance_after": stays,
                             "returned": 1 - stays / moved if moved > 0 else float("nan"),
                             "distance_to_start": distance(after, start), "n_tokens": probe.n_tokens})
                del pushed, after
                bar.update()
    return {"stiffness": pd.DataFrame(rows)}
