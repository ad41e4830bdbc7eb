"""What the global-geometry instruments read from an Atlas Lab model: its run, and its modular task.

A Lab model (``lab:RECIPE@SEED``, or a checkpoint directory ``OUT/<recipe>/seed-<S>/step-<N>``)
carries its run with it: ``atlas.lab.lab_checkpoint(lm.path)`` gives the recipe, the other
checkpoints of the same run and, for modular addition, all p² pairs with the run's
training / held-out split (``modular_task``). Any other model is refused with one error
naming the fix.

Lab models are tiny (the modular-addition recipe: 1 layer of width 64); their forward passes run
on one thread (``one_thread``), as the Lab trains them: on a loaded 2-core machine two contending
threads make them about ten times slower, and one thread gives the same bits on any core count.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.nn import functional as F

from .._errors import BadInput
from .._models import LoadedModel

__all__ = ["heldout_nll", "lab_run", "modular_run", "one_thread"]


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


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one CPU thread inside the block; the caller's thread count is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
