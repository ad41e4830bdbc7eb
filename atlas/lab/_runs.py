"""Training as a stored run, and Lab runs as model names.

A training run is a measurement like any other: its trajectory table (schema
``trajectory``) is validated and stored append-only as a run of the pseudo-instrument
``lab``, with the recipe hash as the model revision, the seed, the steps, the code
version and the wall time in its provenance; the protocol log records it. Training the
same recipe hash and seed again reuses the stored run when its checkpoints are still on
disk (CISP's reuse rule: the same key, a complete run); otherwise it trains (the training
is deterministic, so the weights are the ones stored before) and stores a new run.

A Lab run is a model name: ``lab:RECIPE`` (the recipe's seed) or ``lab:RECIPE@SEED``,
RECIPE a bundled recipe name or a YAML path. It names the run's last checkpoint.
Loading a model never trains: ``atlas.load_model`` asks a *Lab resolver* for the
checkpoint of a ``lab:`` name, and ``LabRuns`` is that resolver: it trains the run when it
is not on disk and stores the training as a run, so every path that trains stores it.
The composition roots build one per session and inject it (the pytest plugin into the
prediction session, the ``atlas`` command into ``load_model`` and ``run_instrument``);
CISP hands it to an instrument that trains runs of its own (``memory``)::

    lab = LabRuns(store, ProtocolLog(store, session_id))
    lm = load_model("lab:tiny-modular@0", lab=lab)   # trained and stored if not on disk
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .._corpus import load_corpus
from .._costs import training_estimate
from .._progress import progress_bar, progress_line, routed
from .._errors import LabError
from .._registry import LAB_PREFIX
from .._provenance import content_hash, git_commit_of_atlas, package_versions, settings_hash
from .._public import public
from .._schema import coerce, validate_table
from .._table import duration
from .._store import ProtocolLog, Run, Store
from ._recipe import MAX_SEED, Recipe, check_seed, load_recipe
from ._train import TRAJECTORY, TrainResult, finished_run, run_lock, train

__all__ = ["LAB_PREFIX", "LabRuns", "lab_name", "parse_lab_name", "trained_on", "trained_run"]

_NAME = re.compile(r"^lab:(?P<recipe>[^@]+)(?:@(?P<seed>[^@]*))?$")


def parse_lab_name(name: str) -> tuple[Recipe, int]:
    """(recipe, seed) of a model name ``lab:RECIPE[@SEED]``: the one reader of Lab names.

    RECIPE is a bundled recipe's name, exactly, or a recipe file's path (``.yaml``); SEED a whole number in
    ``0 .. MAX_SEED``. Anything else is a LabError in one line, before a file is read or a folder made."""
    match = _NAME.match(name)
    if match is None:
        raise LabError(f"{name[:80]!r} is not a Lab model name: use lab:RECIPE or lab:RECIPE@SEED "
                       "(e.g. lab:modular-addition@1)")
    seed = match["seed"]
    if seed is not None and not re.fullmatch(r"[0-9]{1,10}", seed):
        raise LabError(f"{name[:80]!r}: the seed after @ must be a whole number between 0 and {MAX_SEED}")
    recipe = load_recipe(match["recipe"])
    return recipe, recipe.seed if seed is None else check_seed(int(seed), f"the seed of {name[:80]!r}")


def lab_name(recipe: str, seed: int) -> str:
    return f"{LAB_PREFIX}{recipe}@{seed}"


def trained_run(store: Store, recipe: Recipe | str, seed: int | None = None, *, out: str | Path | None = None,
                steps: int | None = None, progress: bool = True, log: ProtocolLog | None = None
                ) -> tuple[TrainResult, Run]:
    """Train (or reuse) a recipe's run and store its trajectory as a run; returns both.

    The run's lock (``run_lock``) is held until the run is stored: a process that waited for this one finds
    the run on disk and in the store, and reuses both."""
    recipe = load_recipe(recipe) if isinstance(recipe, (str, Path)) else recipe
    recipe = recipe.updated({"steps": steps}) if steps is not None else recipe
    seed = check_seed(recipe.seed if seed is None else seed)
    with run_lock(recipe, seed, out, progress):
        return _trained_run(store, recipe, seed, out, progress, log or ProtocolLog(store, ""))


def _trained_run(store: Store, recipe: Recipe, seed: int, out: str | Path | None, progress: bool,
                 log: ProtocolLog) -> tuple[TrainResult, Run]:
    key = settings_hash({"instrument": "lab", "recipe_hash": recipe.hash, "seed": seed})
    result = train(recipe, seed=seed, out=out, progress=progress)
    data = {"instrument": "lab", "model": lab_name(recipe.name, seed), "corpus_hash": _data_hash(recipe)}
    stored = store.runs(settings_hash=key, status="complete")
    if stored and result.reused:
        log.write("reused", run_id=stored[-1].id, spec_key=key, reason="the stored run's checkpoints are on disk",
                  **data)
        return result, stored[-1]
    trajectory = result.trajectory
    validate_table("trajectory", trajectory)
    ended = datetime.fromtimestamp((result.run_dir / TRAJECTORY).stat().st_mtime, timezone.utc)  # when it finished
    run = Run(provenance="trained", instrument="lab", instrument_version="1", model=data["model"],
              model_revision=recipe.hash, corpus=recipe.name, corpus_hash=data["corpus_hash"],
              settings={"recipe": recipe.as_dict(), "seed": seed, "steps": recipe.steps,
                        "run_dir": str(result.run_dir), "wall_s": result.wall_s,
                        # a run trained before cpu_s was recorded has none (NaN): stored JSON must be finite
                        "cpu_s": result.cpu_s if math.isfinite(result.cpu_s) else None,
                        "checkpoints": [[step, str(path)] for step, path in result.checkpoints]},
              settings_hash=key, device="cpu", dtype="float32", seed=seed, packages=package_versions(),
              git_commit=git_commit_of_atlas(), status="complete", ended_at=ended,
              started_at=ended - timedelta(seconds=result.wall_s if math.isfinite(result.wall_s) else 0.0))
    store.write_run(run, {"trajectory": coerce("trajectory", trajectory)})
    expected = training_estimate(recipe.name, recipe.steps)
    log.write("measured", run_id=run.id, spec_key=key,
              reason="reused the checkpoints on disk" if result.reused else f"trained in {duration(result.wall_s)}"
              + ("" if expected is None else f", the plan expected {duration(expected[0])}"), **data)
    return result, run


def _data_hash(recipe: Recipe) -> str:
    """What the recipe trains on, as a hash: the corpus's content hash, or the modular task's description."""
    data = recipe.as_dict()["data"]
    return load_corpus(data["corpus"]).hash if "corpus" in data else content_hash(data)


def trained_on(model_name: str) -> set[str]:
    """Ids of the passages a Lab model trained on (empty for any other model: its training data are not known
    here). A comparison of a base model and its tuned copy scores only passages neither trained on. The run is
    read from disk (it was trained when the model was loaded), never trained here."""
    if not model_name.startswith(LAB_PREFIX):
        return set()
    recipe, seed = parse_lab_name(model_name)
    if "corpus" not in recipe.as_dict()["data"]:
        return set()
    run = finished_run(recipe, seed)
    if run is None:
        raise LabError(f"{model_name} is not on disk: load it first (through a Lab resolver, atlas.lab.LabRuns), "
                       "which trains and stores it")
    from ._checkpoint import lab_checkpoint

    return set(lab_checkpoint(run.checkpoints[-1][1]).split.get("train_ids", ()))


@dataclass
class LabRuns:
    """The Lab resolver: Lab runs trained on demand, each training stored as a run in ``store``.

    ``lab(name)`` is the checkpoint directory of ``lab:RECIPE[@SEED]`` (what ``atlas.load_model`` asks of its
    ``lab`` argument); ``lab.train(recipe, seed)`` trains (or reuses) a run given as a recipe. Both store the
    training through ``trained_run``, with its step in the session's protocol log ``log``."""

    store: Store
    log: ProtocolLog | None = None
    progress: bool = False

    def train(self, recipe: Recipe | str, seed: int | None = None) -> TrainResult:
        return trained_run(self.store, recipe, seed, progress=self.progress, log=self.log)[0]

    def __call__(self, name: str) -> str:
        recipe, seed = parse_lab_name(name)
        return str(self.train(recipe, seed).checkpoints[-1][1])

    def prepare(self, runs: Iterable[tuple[Recipe, int]], workers: int | None = None) -> None:
        """Train, side by side in worker processes, the runs among ``runs`` (recipe, seed) that are not on disk,
        before they are needed one at a time: a small recipe trains on one thread (``train``), so on a
        machine of C cores C of them (``workers``, default C) train at once and give the same bits as one after
        another. A fine-tune (all threads) and a lone run are left to ``train``. Each worker's progress lines come back through a
        queue and are written here. Nothing is stored here: each run is stored when it is first asked for
        (``train``, which then finds it on disk). A run that fails in a worker is left untrained, to fail
        again where it is needed, with its error there."""
        pending = list(dict.fromkeys((r, s) for r, s in runs if r.kind != "finetune" and finished_run(r, s) is None))
        workers = min(len(pending), workers or len(os.sched_getaffinity(0)))
        if workers < 2:
            return
        spawn = multiprocessing.get_context("spawn")  # no fork of a process holding torch's thread pools
        lines = spawn.Queue()
        with (ProcessPoolExecutor(workers, mp_context=spawn, initializer=_report_to, initargs=(lines,)) as pool,
              progress_bar(total=len(pending), desc=f"train {len(pending)} Lab runs, {workers} at a time",
                           unit="runs", enabled=self.progress) as bar):
            running = {pool.submit(_train_reporting, recipe, seed, self.progress) for recipe, seed in pending}
            while running:
                done, running = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                while not lines.empty():
                    progress_line(lines.get())
                bar.update(len(done))


_LINES = None  # a worker's queue of progress lines (set by ``_report_to``)


def _report_to(lines) -> None:
    global _LINES
    _LINES = lines


def _train_reporting(recipe: Recipe, seed: int, progress: bool) -> None:
    """A worker of ``LabRuns.prepare``: the run trained (or found) under its lock, its progress lines queued."""
    with routed(_LINES.put):
        train(recipe, seed=seed, progress=progress)


public("atlas.lab", LabRuns)
