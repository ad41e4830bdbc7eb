"""The trainer: one recipe and one seed in, a trajectory of Hugging Face checkpoints out.

Layout of a run (``OUT`` defaults to ``$ATLAS_CACHE/lab/<first 12 hex digits of the recipe hash>``, so
that every version of a recipe has its own place and a model name ``lab:RECIPE@SEED`` finds it)::

    OUT/<recipe>/seed-<S>/step-<N>/     config.json, model.safetensors, tokenizer files, lab.json
    OUT/<recipe>/seed-<S>/trajectory.json   the trajectory table and the checkpoint list, written last

Each ``step-<N>`` directory is a model name for ``atlas.load_model`` and for
``AutoModelForCausalLM.from_pretrained``; its ``lab.json`` holds the recipe name and
hash, the seed, the step, the resolved recipe, the data split (``atlas.lab._data``:
enough to rebuild the held-out set) and that checkpoint's trajectory row. A finished run
of the same recipe hash and seed is reused as it lies on disk; a directory that holds
another recipe's run is refused.

One trainer per run. A run is trained under a file lock beside it,
``OUT/<recipe>/seed-<S>.lock`` (``run_lock``; an OS lock, released when its process ends,
however it ends): a second process that needs the run waits for the first, then finds the
run finished and reuses it. The trainer writes each checkpoint into a folder of its own
(``.step-<N>.partial-<pid>-<random>``) and renames it into place, and the trajectory last
the same way, so a crash or a kill never leaves a half-written checkpoint, and a run
without its trajectory is never taken for a finished one. What a killed trainer left
(partial folders, an unfinished run) is removed by the next trainer, which holds the lock.

Determinism. The initial weights come from ``torch.manual_seed(seed)``, the data order
from a generator seeded with ``seed``, dropout is 0 and
``torch.use_deterministic_algorithms(True)`` holds during the run: two runs on one
machine with the same number of threads give bit-for-bit identical weights (a different
thread count may change float summation order; ``lab.json`` records it).

Step N is the weights after N optimiser updates (step 0: the initial model). At each
checkpoint step the trajectory records (schema ``trajectory``): the loss and accuracy on
the whole training set and the whole held-out set -- answer accuracy for modular
addition, top-1 next-token accuracy for language models, both token-weighted -- the L2
norm of all parameters, and the L2 norm of the gradient of the training-set loss at
those weights (for full-batch modular addition: the gradient of the next update, before
it is applied). Measuring touches neither the weights nor the optimiser, so the set of
checkpoints does not change the weights.

Optimiser: AdamW (Loshchilov & Hutter 2019) with decoupled weight decay on every
parameter, as in Nanda et al. (2023); the schedule multiplies the learning rate of
update k (1-based) by ``Schedule.factor(k)``.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from filelock import FileLock, Timeout

from .._errors import LabError
from .._models import cache_dir
from .._progress import progress_bar, transformers_bars_off
from .._public import public
from .._schema import validate_table
from ._data import IGNORE, Batch, build_task
from ._model import initial_model
from ._recipe import Recipe, check_seed, load_recipe

__all__ = ["TRAJECTORY_COLUMNS", "TrainResult", "default_out", "evaluate", "finished_run", "missing_checkpoints",
           "run_lock", "train"]

TRAJECTORY_COLUMNS = ("step", "train_loss", "heldout_loss", "train_acc", "heldout_acc", "weight_norm", "grad_norm")
METADATA = "lab.json"
TRAJECTORY = "trajectory.json"


def default_out() -> Path:
    """Where runs go unless told: ``$ATLAS_CACHE/lab`` (``~/.cache/atlas/lab``)."""
    return cache_dir() / "lab"


@dataclass
class TrainResult:
    recipe: Recipe
    seed: int
    trajectory: pd.DataFrame  # schema trajectory, one row per checkpoint step
    checkpoints: list[tuple[int, Path]]  # (step, checkpoint directory), ascending
    run_dir: Path
    wall_s: float  # training wall time of the run (as stored, when reused)
    cpu_s: float  # CPU time of the process during training, all threads (on a shared machine: below wall_s)
    reused: bool = False


def train(recipe: Recipe | str, seed: int | None = None, out: str | Path | None = None, steps: int | None = None,
          progress: bool = True) -> TrainResult:
    """Train ``recipe`` (a Recipe, a bundled recipe name or a YAML path) with ``seed`` (default: the recipe's).

    ``steps`` overrides the recipe's step count (a new recipe hash). Returns the trajectory and the
    checkpoints; a finished identical run under ``out`` is returned without training (``reused``), also when
    another process has just trained it (this one waits for it: ``run_lock``).
    """
    recipe = load_recipe(recipe) if isinstance(recipe, (str, Path)) else recipe
    if steps is not None:
        recipe = recipe.updated({"steps": steps})
    seed = check_seed(recipe.seed if seed is None else seed)
    stored = finished_run(recipe, seed, out)
    if stored is not None:
        return stored
    with run_lock(recipe, seed, out, progress) as run_dir:
        stored = finished_run(recipe, seed, out)  # trained by the process this one waited for
        if stored is not None:
            return stored
        _clear_unfinished(run_dir)
        with _run_conditions(threads=None if recipe.kind == "finetune" else 1):
            return _train(recipe, recipe.hash, seed, run_dir, progress)


@contextmanager
def run_lock(recipe: Recipe, seed: int, out: str | Path | None = None, progress: bool = True):
    """Hold the run's lock (``OUT/<recipe>/seed-<S>.lock``) inside the block, waiting for another process that
    holds it (with a line on stderr when ``progress``); yields the run's folder, made if need be.

    The lock is re-entrant in one thread (``atlas.lab.LabRuns`` holds it around training and storing the run,
    so a waiting process finds the run stored as well as trained), and exclusive between threads and
    processes."""
    run_dir = _run_dir(recipe, seed, out)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{run_dir}.lock", is_singleton=True)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        if progress:
            print(f"waiting for another process training {recipe.name} seed {seed} (lock {lock.lock_file})",
                  file=sys.stderr, flush=True)
        lock.acquire()
    try:
        yield run_dir
    finally:
        lock.release()


def finished_run(recipe: Recipe, seed: int, out: str | Path | None = None) -> TrainResult | None:
    """The finished run of ``recipe`` and ``seed`` under ``out`` as it is on disk (``reused``), without
    training; None when it is not there."""
    return _stored_run(_run_dir(recipe, seed, out), recipe, recipe.hash, seed)


def _run_dir(recipe: Recipe, seed: int, out: str | Path | None) -> Path:
    """Where a run lives: ``OUT/<recipe>/seed-<S>``, OUT by default the recipe hash's folder of the Lab cache."""
    base = Path(out) if out is not None else default_out() / recipe.hash.removeprefix("sha256:")[:12]
    return base / recipe.name / f"seed-{seed}"


def _train(recipe: Recipe, recipe_hash: str, seed: int, run_dir: Path, progress: bool) -> TrainResult:
    started, started_cpu = time.perf_counter(), time.process_time()
    start = initial_model(recipe, seed)
    model = start.model
    task = build_task(recipe, start.tokenizer, start.doc_start_id, start.pad_id)
    eval_sets = task.eval_sets()
    stream = task.stream(recipe.batch, recipe.steps, seed)
    opt = recipe.optimiser
    optimiser = torch.optim.AdamW(model.parameters(), lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda done: recipe.schedule.factor(done + 1))
    checkpoint_steps = recipe.checkpoint_steps
    saved_at = set(checkpoint_steps)
    meta = {"recipe": recipe.name, "recipe_hash": recipe_hash, "seed": seed, "kind": recipe.kind,
            "steps": recipe.steps, "checkpoint_steps": checkpoint_steps, "trajectory": f"../{TRAJECTORY}",
            "split": task.describe(), "init": start.revision, "doc_start_token": start.doc_start_token,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "resolved_recipe": recipe.as_dict()}
    rows, checkpoints = [], []
    bar = progress_bar(total=recipe.steps, desc=f"train {recipe.name} seed {seed}", unit="steps", enabled=progress)
    loss = float("nan")
    for step in range(recipe.steps + 1):
        if step in saved_at:
            row = {"step": step, **evaluate(model, eval_sets), **_norms(model, eval_sets["train"])}
            if not all(math.isfinite(v) for v in row.values()):
                raise LabError(f"recipe {recipe.name!r} seed {seed} diverged by step {step} ({row}); "
                               "lower optimiser.lr or add a linear_warmup schedule")
            rows.append(row)
            checkpoints.append((step, _save_checkpoint(run_dir, step, model, start.tokenizer,
                                                       {**meta, "step": step, "metrics": row})))
            bar.set_postfix(loss=f"{loss:.4g}", heldout_acc=f"{row['heldout_acc']:.3f}", refresh=False)
        if step == recipe.steps:
            break
        model.train()
        nll, _, n = _score(model, next(stream))
        optimiser.zero_grad(set_to_none=True)
        (nll / n).backward()
        optimiser.step()
        scheduler.step()
        loss = nll.item() / n
        if not math.isfinite(loss):
            raise LabError(f"recipe {recipe.name!r} seed {seed} diverged at step {step + 1} (training loss {loss}); "
                           "lower optimiser.lr or add a linear_warmup schedule")
        bar.set_postfix(loss=f"{loss:.4g}", heldout_acc=f"{rows[-1]['heldout_acc']:.3f}" if rows else "-",
                        refresh=False)
        bar.update(1)
    bar.close()
    optimiser.zero_grad(set_to_none=True)
    model.eval()
    wall_s, cpu_s = time.perf_counter() - started, time.process_time() - started_cpu
    trajectory = pd.DataFrame(rows, columns=list(TRAJECTORY_COLUMNS))
    validate_table("trajectory", trajectory)
    _write_json(run_dir / TRAJECTORY, {
        "recipe": recipe.name, "recipe_hash": recipe_hash, "seed": seed, "wall_s": wall_s, "cpu_s": cpu_s,
        "threads": meta["threads"], "resolved_recipe": recipe.as_dict(), "rows": rows,
        "checkpoints": [{"step": s, "path": p.name} for s, p in checkpoints]})
    return TrainResult(recipe, seed, trajectory, checkpoints, run_dir, wall_s, cpu_s)


# --- measuring -----------------------------------------------------------------------------

def _score(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int, int]:
    """(summed NLL over scored positions, number predicted correctly, number scored)."""
    logits = model(input_ids=batch.input_ids).logits  # [B, T, V]
    scored = batch.targets != IGNORE  # [B, T]
    picked, targets = logits[scored].float(), batch.targets[scored]  # [N, V], [N]
    nll = F.cross_entropy(picked, targets, reduction="sum")
    return nll, int((picked.argmax(-1) == targets).sum()), int(scored.sum())


def evaluate(model: torch.nn.Module, eval_sets: dict[str, list[Batch]]) -> dict[str, float]:
    """Token-weighted mean loss and accuracy on each evaluation set: ``train_loss``, ``train_acc``, ..."""
    model.eval()
    out = {}
    with torch.no_grad():
        for name, batches in eval_sets.items():
            scores = [_score(model, b) for b in batches]
            n = sum(s[2] for s in scores)
            out[f"{name}_loss"] = sum(s[0].item() for s in scores) / n
            out[f"{name}_acc"] = sum(s[1] for s in scores) / n
    return out


def _norms(model: torch.nn.Module, train_batches: list[Batch]) -> dict[str, float]:
    """L2 norm of all parameters, and of the gradient of the token-weighted mean training loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    n = sum(int((b.targets != IGNORE).sum()) for b in train_batches)
    for b in train_batches:
        (_score(model, b)[0] / n).backward()  # grads accumulate to the gradient of the mean over all of them
    with torch.no_grad():
        weight = math.sqrt(sum(p.double().pow(2).sum().item() for p in params))
        grad = math.sqrt(sum(p.grad.double().pow(2).sum().item() for p in params if p.grad is not None))
    model.zero_grad(set_to_none=True)
    return {"weight_norm": weight, "grad_norm": grad}


# --- files ---------------------------------------------------------------------------------

def _partial(path: Path) -> Path:
    """A name beside ``path`` that only this process writes: ``.<name>.partial-<pid>-<random>``."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")


def _clear_unfinished(run_dir: Path) -> None:
    """Before training a run again (under its lock): remove what killed trainers left, partial checkpoints and
    trajectories, and the trajectory of an earlier run whose checkpoints are no longer all on disk, so that the
    run is unfinished until this training ends."""
    for stale in run_dir.glob("*.partial*"):
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink()
    (run_dir / TRAJECTORY).unlink(missing_ok=True)


def _save_checkpoint(run_dir: Path, step: int, model, tokenizer, meta: dict) -> Path:
    final = run_dir / f"step-{step}"
    partial = _partial(final)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / METADATA).write_text(json.dumps(meta, indent=1))
    if final.exists():  # an unfinished earlier run of the same recipe and seed
        shutil.rmtree(final)
    os.replace(partial, final)
    return final


def _write_json(path: Path, payload: dict) -> None:
    partial = _partial(path)
    partial.write_text(json.dumps(payload, indent=1))
    os.replace(partial, path)


def missing_checkpoints(run_dir: Path, stored: dict) -> list[str]:
    """The checkpoint folders that a finished run's trajectory file (``stored``) lists and ``run_dir`` lacks."""
    return [c["path"] for c in stored["checkpoints"] if not (run_dir / c["path"] / METADATA).is_file()]


def _stored_run(run_dir: Path, recipe: Recipe, recipe_hash: str, seed: int) -> TrainResult | None:
    """The finished run in ``run_dir`` when it is this recipe's; LabError when it is another recipe's."""
    found = {}
    if (run_dir / TRAJECTORY).is_file():
        found = json.loads((run_dir / TRAJECTORY).read_text())
    else:
        for meta in sorted(run_dir.glob(f"step-*/{METADATA}")):
            found = json.loads(meta.read_text())
            break
    if not found:
        return None
    if found["recipe_hash"] != recipe_hash:
        raise LabError(f"{run_dir} holds a run of another version of recipe {recipe.name!r} (hash "
                       f"{found['recipe_hash'][:19]}, this one {recipe_hash[:19]}); give another --out "
                       "or remove that directory")
    if "rows" not in found or missing_checkpoints(run_dir, found):
        return None  # an unfinished run of this recipe, or one with checkpoints removed since: train again
    checkpoints = [(c["step"], run_dir / c["path"]) for c in found["checkpoints"]]
    trajectory = pd.DataFrame(found["rows"], columns=list(TRAJECTORY_COLUMNS))
    return TrainResult(recipe, seed, trajectory, checkpoints, run_dir, found["wall_s"], found.get("cpu_s", math.nan),
                       reused=True)


# --- run conditions ------------------------------------------------------------------------

@contextmanager
def _run_conditions(threads: int | None):
    """Deterministic kernels, ``threads`` CPU threads (None: as they are) and no per-file progress bars from
    ``save_pretrained`` during the run; the caller's settings are restored afterwards. The small recipes train
    on one thread, so their weights are the same bits on a machine of any core count (the float summation
    order of a matrix product follows the thread count); a fine-tune of a real model keeps the machine's."""
    deterministic, before = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with transformers_bars_off():
            yield
    finally:
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(deterministic)


public("atlas.lab", TrainResult, default_out, train)
