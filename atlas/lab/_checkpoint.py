"""Reading a Lab checkpoint back: its run, its trajectory, its held-out data.

Instruments are given one checkpoint directory (a model name). ``lab_checkpoint(path)``
reads its ``lab.json`` and returns what the trainer knew: the recipe (rebuilt from the
resolved copy stored with the checkpoint), its hash, the seed and step, the data split,
the other checkpoints of the same run and, once the run has finished, its trajectory.
The held-out data are rebuilt from the split's description and checked against it (the
training-pair hash for modular addition, the passage ids for a corpus), so a corpus file
changed since training is refused rather than silently measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .._corpus import Corpus, load_corpus
from .._errors import LabError
from .._models import LoadedModel, load_model
from .._public import public
from ._data import ModularTask, split_passages
from ._recipe import CorpusData, ModularData, Recipe, parse_recipe
from ._train import METADATA, TRAJECTORY, TRAJECTORY_COLUMNS, evaluate, missing_checkpoints

__all__ = ["LabCheckpoint", "evaluate_modular", "lab_checkpoint"]


@dataclass(frozen=True)
class LabCheckpoint:
    path: Path
    recipe: Recipe
    recipe_hash: str
    seed: int
    step: int
    split: dict  # the data split's description (atlas.lab._data, ``describe``)
    metrics: dict  # this checkpoint's trajectory row
    meta: dict  # the whole lab.json

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @property
    def checkpoints(self) -> list[tuple[int, Path]]:
        """Every checkpoint of the same run on disk, (step, directory) ascending by step."""
        found = []
        for meta_file in self.run_dir.glob(f"step-*/{METADATA}"):
            meta = json.loads(meta_file.read_text())
            if meta["recipe_hash"] == self.recipe_hash and meta["seed"] == self.seed:
                found.append((meta["step"], meta_file.parent))
        return sorted(found)

    def trajectory(self) -> pd.DataFrame | None:
        """The run's trajectory table (schema ``trajectory``), one row per checkpoint, or None while the run is
        unfinished. A LabError when a checkpoint the finished run lists is no longer on disk: a reader of the
        trajectory reads the whole run, never the part of it that is left."""
        path = self.run_dir / TRAJECTORY
        if not path.is_file():
            return None
        stored = json.loads(path.read_text())
        if stored["recipe_hash"] != self.recipe_hash:
            return None
        if missing := missing_checkpoints(self.run_dir, stored):
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise LabError(f"the Lab run in {self.run_dir} lists {len(stored['checkpoints'])} checkpoints; missing "
                           f"from disk: {shown}; train it again (`atlas train RECIPE "
                           f"--seed {self.seed}`, or load its lab: name), which restores them")
        return pd.DataFrame(stored["rows"], columns=list(TRAJECTORY_COLUMNS))

    def modular_task(self) -> ModularTask:
        """All p² pairs with this run's training and held-out pairs (modular addition only)."""
        if not isinstance(self.recipe.data, ModularData):
            raise LabError(f"{self.path} is a {self.recipe.kind} checkpoint; modular_task is for modular_addition")
        task = ModularTask(self.recipe.data)
        if task.describe()["train_pairs_sha256"] != self.split["train_pairs_sha256"]:
            raise LabError(f"{self.path}: the training pairs rebuilt from the recipe differ from the ones it "
                           "trained on (another torch version?); retrain with `atlas train`")
        return task

    def corpus_split(self) -> tuple[Corpus, Corpus]:
        """(training passages, held-out passages) of this run (corpus_lm and finetune only)."""
        if not isinstance(self.recipe.data, CorpusData):
            raise LabError(f"{self.path} is a modular_addition checkpoint; corpus_split is for corpus recipes")
        data = self.recipe.data
        train, heldout = split_passages(load_corpus(data.corpus), data.domains, data.train_fraction, data.split_seed)
        if [p.id for p in heldout.passages] != self.split["heldout_ids"]:
            raise LabError(f"{self.path}: corpus {data.corpus} no longer splits into the passages this run held "
                           f"out (corpus hash then {self.split['corpus_hash'][:19]}); use that corpus or retrain")
        return train, heldout


def lab_checkpoint(path: str | Path) -> LabCheckpoint:
    """The Lab metadata of a checkpoint directory (``OUT/<recipe>/seed-<S>/step-<N>``)."""
    path = Path(path)
    meta_file = path / METADATA
    if not meta_file.is_file():
        raise LabError(f"{path} is not a Lab checkpoint (no {METADATA}); train one with `atlas train RECIPE`")
    meta = json.loads(meta_file.read_text())
    resolved = dict(meta["resolved_recipe"])
    name, description = resolved.pop("name"), resolved.pop("description", "")
    recipe = parse_recipe(resolved, name, description=description)
    return LabCheckpoint(path.resolve(), recipe, meta["recipe_hash"], meta["seed"], meta["step"], meta["split"],
                         meta["metrics"], meta)


def evaluate_modular(checkpoint: str | Path | LoadedModel) -> dict[str, float]:
    """Loss and accuracy of a modular-addition checkpoint on its training and held-out pairs:
    ``{train_loss, heldout_loss, train_acc, heldout_acc}`` (nats; answer accuracy at the last position).

    ``checkpoint`` is a checkpoint directory or a model ``atlas.load_model`` loaded from one; the numbers
    are those the trajectory recorded for it (the same computation)."""
    lm = checkpoint if isinstance(checkpoint, LoadedModel) else load_model(str(checkpoint), device="cpu")
    task = lab_checkpoint(lm.path or lm.name).modular_task()
    return evaluate(lm.model, {name: [b.to(lm.device) for b in batches] for name, batches in task.eval_sets().items()})


public("atlas.lab", LabCheckpoint, evaluate_modular, lab_checkpoint)
