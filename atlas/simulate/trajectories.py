"""Training trajectories of a Lab recipe's seeds, drawn as the ``phase_transitions`` instrument tabulates them.

A simulated seed is one run of the ``modular-addition`` recipe as the instrument's table ``phase_transitions``
holds it: one row per checkpoint of the recipe (log-spaced early, then every 50 steps: 71 steps to 3000), the
held-out accuracy counted on the recipe's held-out pairs (so quantised to 1 / 6586, and exactly 1 once every pair
is solved), the training accuracy on its training pairs. Every run memorises first: the training loss falls from
ln p (chance) to a plateau within ~250 steps (time constant ``MEMORISE``) while held-out accuracy climbs from 1/p
to a memorisation level ``a0`` (0.2-0.35) more slowly (time constant ``early``, 300 steps: at most ~0.05 per
50-step window; 0: at ``a0`` from the first checkpoint). On the plateau the training loss (0.005-0.01) drifts
smoothly (weight decay: a relative change of 1-2.5% per 50 steps, with 1% multiplicative noise per checkpoint)
and the held-out accuracy by a few pairs (a random walk, ``drift``: its standard deviation per checkpoint, in
held-out pairs). The summary ``phase_transitions_summary`` is
the instrument's own (``order_transitions``), so a calibration runs the instrument's summary and the prediction's
analysis together.

What happens on the plateau is the model (``shape(rng, steps, a0, loss) -> (heldout_acc, train_loss)``):

* ``ramp`` -- no jump: from step 300-1500 held-out accuracy rises linearly from ``a0`` to 1 over 1000-1500 steps
  (at most 0.04 per 50-step window) and saturates;
* ``glitch`` -- no jump: one checkpoint reads 0.01 higher than the plateau, the next is back on it;
* ``flip`` -- no jump: one held-out pair flips to correct at a random checkpoint and stays (a rise of 1 / 6586);
* ``spike`` -- no grokking: an Adam loss spike (the training loss 3-6 times higher at one checkpoint, held-out
  accuracy 0.05-0.2 lower) that recovers by the next checkpoint, so the largest rise is the recovery;
* ``grokking(rise)`` -- the alternative: a logistic jump from ``a0`` to 1 centred at step 1500-2400 whose
  steepest 50-step window rises by ``rise`` (x 0.9-1.1 per seed), while the training loss keeps drifting smoothly;
  ``grokking(rise, loss_fall=0.7)`` makes the training loss fall by that share inside the jump's steepest window.

``Seeds(shape, names)`` is the simulator: ``simulate(rng) -> {("phase_transitions", name): tables}`` for each
seed name (the keys of a prediction over several Lab runs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

__all__ = ["Seeds", "flip", "glitch", "grokking", "ramp", "recipe", "run_tables", "spike"]

MEMORISE = 40.0  # steps: the time constant of memorisation (training accuracy ~1 by step 250)
WINDOW = 50  # the recipe's checkpoint spacing: the instrument's window


@cache
def recipe() -> tuple[np.ndarray, int, int, int]:
    """The modular-addition recipe's checkpoint steps, p, and its numbers of training and held-out pairs."""
    from ..lab import load_recipe

    found = load_recipe("modular-addition")
    p = found.data.p
    n_train = round(found.data.train_fraction * p * p)
    return np.asarray(found.checkpoint_steps), p, n_train, p * p - n_train


def _quantised(share: np.ndarray, n: int) -> np.ndarray:
    return np.round(np.clip(share, 0.0, 1.0) * n) / n


def run_tables(rng: np.random.Generator, shape: Callable, drift: float = 0.5, early: float = 300.0
               ) -> dict[str, pd.DataFrame]:
    """One simulated seed: ``{"phase_transitions": table, "phase_transitions_summary": its summary}``."""
    from ..instruments import order_transitions

    steps, p, n_train, n_heldout = recipe()
    learnt = 1 - np.exp(-steps / MEMORISE)  # memorisation's progress
    a0 = rng.uniform(0.2, 0.35)
    plateau = rng.uniform(0.005, 0.01) * np.exp(-steps / rng.uniform(2000, 5000))  # smooth drift of the loss
    loss = (plateau + (np.log(p) - plateau) * (1 - learnt)) * np.exp(rng.normal(0, 0.01, len(steps)))
    walk = np.cumsum(rng.normal(0, drift, len(steps))) / n_heldout * learnt  # a few held-out pairs change
    heldout_acc, train_loss = shape(rng, steps, a0, loss)
    climbed = 1 - np.exp(-steps / early) if early > 0 else 1.0  # held-out accuracy's climb to the plateau
    heldout_acc = _quantised(1 / p + (heldout_acc - 1 / p) * climbed + walk, n_heldout)
    train_acc = _quantised(learnt, n_train)
    heldout_loss = np.log(p) * (1 - heldout_acc) + train_loss
    table = pd.DataFrame({"step": steps, "train_loss": train_loss, "heldout_loss": heldout_loss,
                          "train_acc": train_acc, "heldout_acc": heldout_acc,
                          "generalisation_gap": heldout_loss - train_loss,
                          "weight_norm": 20 + 40 * np.exp(-steps / 1500),
                          "fourier_sparsity": 0.1 + 0.8 * (heldout_acc - heldout_acc.min()) / (1 - heldout_acc.min()),
                          "heldout_acc_resolution": 1 / n_heldout})
    return {"phase_transitions": table, "phase_transitions_summary": order_transitions(table)}


def ramp(rng, steps, a0, loss):
    start = rng.uniform(300, 1500)
    return a0 + (1 - a0) * np.clip((steps - start) / rng.uniform(1000, 1500), 0, 1), loss


def _regular(steps: np.ndarray, after: float, before: float) -> np.ndarray:
    """The regular checkpoints (every ``WINDOW`` steps) strictly between ``after`` and ``before``: the instrument's
    window edges, where an event is seen (one at a log-spaced checkpoint between two edges is interpolated away)."""
    return steps[(steps % WINDOW == 0) & (steps > after) & (steps < before)]


def glitch(rng, steps, a0, loss, size: float = 0.01):
    return a0 + size * (steps == rng.choice(_regular(steps, 500, steps[-1]))), loss


def flip(rng, steps, a0, loss):
    _, _, _, n_heldout = recipe()
    return a0 + (steps >= rng.choice(_regular(steps, 500, steps[-1] + 1))) / n_heldout, loss


def spike(rng, steps, a0, loss):
    at = steps == rng.choice(_regular(steps, 800, steps[-1] - WINDOW))
    return a0 - rng.uniform(0.05, 0.2) * at, loss * np.where(at, rng.uniform(3, 6), 1.0)


@dataclass(frozen=True)
class grokking:  # noqa: N801 -- a shape, called like the others
    """A logistic jump from the memorisation level to 1 whose steepest window rises by ``rise``."""

    rise: float
    loss_fall: float = 0.0  # the training loss's fall inside the steepest window (a share of its level)

    def __call__(self, rng, steps, a0, loss):
        centre = rng.uniform(1500, 2400)
        rise = self.rise * rng.uniform(0.9, 1.1)
        width = WINDOW / (4 * np.arctanh(min(rise / (1 - a0), 0.999)))  # (1 - a0) tanh(w / 4s) = rise
        acc = a0 + (1 - a0) / (1 + np.exp(-(steps - centre) / width))
        grid = steps[-1] - WINDOW * np.arange(steps[-1] // WINDOW, -1, -1)
        end = grid[np.argmax(np.diff(np.interp(grid, steps, acc))) + 1]  # the end of the steepest window
        return acc, loss * np.where(steps >= end, 1 - self.loss_fall, 1.0)


@dataclass(frozen=True)
class Seeds:
    """A simulator of ``names`` seeds of one recipe, each a run of ``shape``: ``simulate(rng) -> evidence``."""

    shape: Callable
    names: tuple[str, ...]
    drift: float = 0.5
    early: float = 300.0
    name: str = ""

    def __call__(self, rng: np.random.Generator) -> dict:
        return {("phase_transitions", seed): run_tables(rng, self.shape, self.drift, self.early)
                for seed in self.names}
