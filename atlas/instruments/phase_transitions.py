"""Phase transitions: order parameters along a Lab run's checkpoints, and where they jump.

The Framework's *phase transitions* (global geometry, pre- / post-): "a behavioural
order parameter Φ(θ) ... phase transition at λ* where ∂Φ/∂λ jumps while L(θ, λ) stays
smooth". No single checkpoint shows it; a training run does. Given one checkpoint of an
Atlas Lab run (a model loaded from ``lab:RECIPE@SEED`` or a checkpoint directory), the
instrument reads the whole run (``atlas.lab.lab_checkpoint(path).trajectory()``: every
checkpoint the run lists, refused when one is missing from disk) and tabulates, per
checkpoint step λ (table ``phase_transitions``):

* the training and held-out loss and accuracy, from the run's trajectory (the trainer's
  own evaluation on the whole training and held-out sets, ``atlas.lab.evaluate_modular``
  is the same computation);
* the generalisation gap, held-out loss − training loss (nats);
* the resolution of the held-out accuracy, 1 / the number of held-out targets (modular addition:
  held-out pairs; unknown, null, for a language-model run): the smallest change it can show;
* the weight norm ‖θ‖₂ (Omnigrok, Liu et al. 2023: grokking is weight decay shrinking
  the weights to the generalising solution);
* for modular addition, the Fourier sparsity of the token embedding (Nanda et al. 2023,
  "Progress measures for grokking via mechanistic interpretability"): the share of the
  centred embedding's squared norm in its ``fourier_k`` strongest frequencies
  (``_order.fourier_sparsity``), read from each checkpoint's weights file.

The summary ``phase_transitions_summary`` (``order_transitions``) locates the jump of each
order parameter with ``_order.transition`` on equal windows of training time (width: the
largest gap between checkpoints): λ*, the largest rise, the median |ΔΦ| per window, the
ratio of the rise to that median floored at Φ's resolution (a quantised accuracy that is
flat in most windows has median 0: one held-out pair flipping would otherwise be an
infinite ratio), the share of the rise Φ keeps after the window (a glitch that falls back
keeps none), and the training loss's change over the same window as a share of its level
there (and, for reference, of its range over the run, which the early drop dominates),
so "Φ jumps while L stays smooth" is a computed statement. Held-out accuracy and Fourier
sparsity jump upward; the generalisation gap and the weight norm downward. A ratio is
infinite when a Φ without a resolution is flat apart from its jump: it is clipped to
``JUMP_RATIO_CAP`` and flagged (``capped``), so every column stays finite. Version 2: the
resolution floor, persistence and the local loss change (version 1 divided by a median
that quantised accuracy made 0, and scaled the loss by its range).

Cost: no forward pass; one weights-file read per checkpoint (71 checkpoints of the
modular-addition recipe: well under a second).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pandas as pd
from safetensors import safe_open

from .._bounds import at_least
from .._corpus import Corpus
from .._errors import BadInput
from .._models import LoadedModel
from ._labruns import lab_run
from ._order import fourier_sparsity, transition
from ._registry import instrument

__all__ = ["JUMP_RATIO_CAP", "measure_phase_transitions", "order_transitions"]

JUMP_RATIO_CAP = 1e6  # a jump ratio above this (or infinite: Φ flat apart from the jump) is stored as the cap
ORDER_PARAMETERS = {"heldout_acc": "rise", "fourier_sparsity": "rise", "generalisation_gap": "fall",
                    "weight_norm": "fall"}  # Φ -> the direction of its transition
RESOLUTIONS = {"heldout_acc": "heldout_acc_resolution"}  # Φ -> the column of its resolution (others: continuous)


def order_transitions(table: pd.DataFrame, *, n_resamples: int = 0, seed: int = 0) -> pd.DataFrame:
    """λ*, jump ratio, persistence and loss change per order parameter (schema ``phase_transitions_summary``).

    No CI: one run is one trajectory (intervals come from seeds, in the predictions); the bootstrap
    settings are accepted but unused."""
    table = table.sort_values("step")
    rows = []
    for phi, direction in ORDER_PARAMETERS.items():
        values = table[phi]
        if values.isna().any():  # Fourier sparsity of a model that is not a modular-addition one
            continue
        resolution = table[RESOLUTIONS[phi]].max() if phi in RESOLUTIONS else 0.0
        resolution = 0.0 if pd.isna(resolution) else float(resolution)  # unknown: no floor
        found = transition(table["step"], values, table["train_loss"], direction=direction, resolution=resolution)
        rows.append({"order_parameter": phi, "direction": direction, "step": found.step,
                     "window_start": found.window_start, "window_end": found.window_end, "rise": found.rise,
                     "median_rise": found.median_rise, "resolution": resolution,
                     "jump_ratio": min(found.jump_ratio, JUMP_RATIO_CAP),
                     "capped": bool(found.jump_ratio > JUMP_RATIO_CAP), "persistence": found.persistence,
                     "loss_change": found.loss_change, "local_loss_change": found.local_loss_change,
                     "n_checkpoints": len(table)})
    return pd.DataFrame(rows)


@instrument("phase_transitions", version="2", measures=("phase_transitions",), terms=("phase_transitions",),
            summaries={"phase_transitions_summary": order_transitions}, runs_split=True)
def measure_phase_transitions(lm: LoadedModel, corpus: Corpus, *, fourier_k: Annotated[int, at_least(1)] = 5,
                              progress: bool = True) -> dict[str, pd.DataFrame]:
    """Order parameters at every checkpoint of the model's Lab run (schema ``phase_transitions``).

    Settings:
        fourier_k: strongest frequencies counted in the Fourier sparsity of a modular-addition embedding (Nanda et al.: 5; at most p // 2)
    """
    from ..lab._recipe import ModularData

    checkpoint = lab_run(lm, "phase_transitions")
    trajectory = checkpoint.trajectory()  # the whole run: a LabError when a checkpoint it lists is missing
    if trajectory is None:
        raise BadInput(f"{lm.name}: the Lab run in {checkpoint.run_dir} has no trajectory yet (unfinished); "
                       "finish it with `atlas train RECIPE --seed S`")
    table = trajectory.sort_values("step").reset_index(drop=True)
    if len(table) < 3:
        raise BadInput(f"{lm.name}: {len(table)} checkpoints with a trajectory row; a transition needs at least 3 "
                       "(train with more checkpoints: the recipe's `checkpoints: {log, every}`)")
    table["generalisation_gap"] = table["heldout_loss"] - table["train_loss"]
    table["fourier_sparsity"] = np.nan
    table["heldout_acc_resolution"] = np.nan
    if isinstance(checkpoint.recipe.data, ModularData):
        table["heldout_acc_resolution"] = 1 / checkpoint.split["n_heldout"]
        p = checkpoint.recipe.data.p
        k = min(fourier_k, p // 2)  # a small p has fewer frequencies than the setting
        name = _embedding_name(lm)
        paths = dict(checkpoint.checkpoints)
        table["fourier_sparsity"] = [fourier_sparsity(_read(paths[s], name)[:p], k) for s in table["step"]]
    return {"phase_transitions": table[["step", "train_loss", "heldout_loss", "train_acc", "heldout_acc",
                                        "generalisation_gap", "weight_norm", "fourier_sparsity",
                                        "heldout_acc_resolution"]]}


def _embedding_name(lm: LoadedModel) -> str:
    weight = lm.model.get_input_embeddings().weight
    return next(name for name, p in lm.model.named_parameters() if p is weight)


def _read(path, name: str) -> np.ndarray:
    """One tensor of a checkpoint's ``model.safetensors``, without building the model: [V, d] float64."""
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        return f.get_tensor(name).double().numpy()
