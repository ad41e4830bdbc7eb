"""What the global-geometry instruments read from an Atlas Lab model: its run, and its modular task.

A Lab model (``lab:RECIPE@SEED``, or a checkpoint directory ``OUT/<recipe>/seed-<S>/step-<N>``)
carries its run with it: ``atlas.lab.lab_checkpoint(lm.path)`` gives the recipe, the other
checkpoints of the same run and, for modular addition, all p² pairs with the run's
training / held-out split (``modular_task``). Any other model is refused with one error
naming the fix.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .._errors import BadInput
from .._models import LoadedModel

__all__ = ["heldout_nll", "lab_run", "modular_run"]


def lab_run(lm: LoadedModel, instrument: str):
    """The ``LabCheckpoint`` behind ``lm``; a BadInput naming the fix for a model that is no Lab checkpoint."""
    from ..lab import LabError, lab_checkpoint

    try:
        return lab_checkpoint(lm.path or lm.name)
    except LabError:
        raise BadInput(f"{instrument} reads a training run: {lm.name} is not a checkpoint of an Atlas Lab run. "
                       "Give a Lab model, e.g. lab:modular-addition@0 (trained with `atlas train modular-addition "
                       "--seed 0`), or a checkpoint directory OUT/<recipe>/seed-<S>/step-<N>") from None


def modular_run(lm: LoadedModel, instrument: str):
    """(LabCheckpoint, ModularTask) of a modular-addition Lab model; BadInput for any other."""
    from ..lab._recipe import ModularData

    checkpoint = lab_run(lm, instrument)
    if not isinstance(checkpoint.recipe.data, ModularData):
        raise BadInput(f"{instrument} probes the modular-addition task: {lm.name} is a {checkpoint.recipe.kind} "
                       "run. Give a modular-addition Lab model, e.g. lab:modular-addition@0")
    return checkpoint, checkpoint.modular_task()


def heldout_nll(model, task, idx: torch.Tensor, device: str, batch_size: int = 4096) -> torch.Tensor:
    """Cross-entropy (nats) of the answer at the last position for the pairs ``idx`` [n]: [n] float64."""
    out = []
    with torch.no_grad():
        for start in range(0, len(idx), batch_size):
            part = idx[start:start + batch_size]
            logits = model(input_ids=task.inputs[part].to(device)).logits[:, -1]  # [b, V]
            out.append(F.cross_entropy(logits.double(), task.answers[part].to(device), reduction="none"))
    return torch.cat(out).cpu()
