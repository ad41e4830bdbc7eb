"""The Atlas Lab: small transformers Atlas trains itself, deterministically, with every checkpoint a model.

No pretrained training trajectory can be downloaded here, yet the Framework's global
geometry (phase transitions, symmetry orbits, algorithmic branches, basin connectivity)
lives "across training trajectories". The Lab makes them: a recipe (YAML, ``recipes/``)
says what to train, ``train`` trains it on CPU in minutes and writes each checkpoint as
a Hugging Face directory that ``atlas.load_model`` and every instrument take as a model
name, with the trajectory table (schema ``trajectory``) beside them. ``LabRuns`` is the Lab
resolver: a model name ``lab:RECIPE@SEED`` trained on demand and stored as a run.

    >>> from atlas.lab import load_recipe, train, lab_checkpoint
    >>> result = train("tiny-modular", seed=0, out=tmp, progress=False)  # doctest: +SKIP
    >>> step, path = result.checkpoints[-1]                                # doctest: +SKIP
    >>> lab_checkpoint(path).trajectory().heldout_acc.iloc[-1]             # doctest: +SKIP

Bundled recipes: ``modular-addition`` (grokking, Power et al. 2022 / Nanda et al. 2023),
``corpus-lm`` (a byte-level LM on a JSONL corpus, with a curriculum option),
``finetune-smollm2`` (the offline model tuned on half of each domain),
``finetune-smollm2-academic`` (tuned on half of the academic abstracts only), and the tiny
``tiny-modular`` / ``tiny-corpus`` for tests.
"""

from ._checkpoint import LabCheckpoint, evaluate_modular, lab_checkpoint
from ._data import Batch
from .._errors import LabError
from ._recipe import Recipe, load_recipe, recipe_names
from ._runs import LabRuns
from ._train import TrainResult, default_out, train

__all__ = ["Batch", "LabCheckpoint", "LabError", "LabRuns", "Recipe", "TrainResult", "default_out",
           "evaluate_modular", "lab_checkpoint", "load_recipe", "recipe_names", "train"]
