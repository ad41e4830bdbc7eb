"""CISP, the protocol layer: every instrument run goes through ``run_instrument``.

It enforces what the Framework asks of a run:

* **isolation** -- the model is checksummed before and after (per-parameter sums
  in float64, computed on the model's device), forward hooks are counted, seeds
  are fixed and grad mode / train mode restored; a run that leaves the model
  changed is stored as failed, never as a valid measurement;
* **validation** -- every table is checked against its schema (great-expectations)
  before anything is written; a table that fails is stored as a failed run with
  the error, and no measurement row is written;
* **provenance and reuse** -- a run records model revision, corpus hash, settings
  hash, device, dtype, seed, package versions and git commit; a complete stored
  run with the same key is reused instead of measured again.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ._corpus import Corpus
from ._models import LoadedModel
from ._schema import validate_table
from ._store import Run, Store, utcnow
from .instruments import INSTRUMENTS

__all__ = ["IsolationBreach", "RunResult", "run_instrument", "settings_hash", "model_checksum"]

STATISTICS_DEFAULTS = {"bootstrap_resamples": 2000, "seed": 0}
_PACKAGES = ("atlas-landscape", "torch", "transformers", "great-expectations", "pandas", "numpy", "scipy", "sqlmodel")


class IsolationBreach(RuntimeError):
    """An instrument left the model different from how it found it."""


@dataclass
class RunResult:
    run: Run
    tables: dict[str, pd.DataFrame]
    reused: bool


def settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def model_checksum(model: torch.nn.Module) -> str:
    """A fingerprint of every parameter and buffer: sum and sum of squares in float64."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            t64 = t.detach().double()
            h.update(f"{name}:{tuple(t.shape)}:{t64.sum().item():.17g}:{(t64 * t64).sum().item():.17g}".encode())
    return h.hexdigest()


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_instrument(store: Store, lm: LoadedModel, corpus: Corpus, instrument: str, *, reuse: bool = True,
                   progress: bool = True, **settings) -> RunResult:
    """Measure ``instrument`` on ``lm`` and ``corpus``; validate, store and return its tables.

    ``settings`` override the instrument's defaults and the statistics defaults
    (``bootstrap_resamples``, ``seed``). Raises ``SchemaViolation`` or
    ``IsolationBreach`` after storing the run as failed.
    """
    try:
        inst = INSTRUMENTS[instrument]
    except KeyError:
        raise KeyError(f"no instrument {instrument!r}; known: {', '.join(INSTRUMENTS)}") from None
    unknown = set(settings) - set(inst.defaults) - set(STATISTICS_DEFAULTS)
    if unknown:
        raise TypeError(f"instrument {instrument!r} has no setting(s) {sorted(unknown)}; "
                        f"it takes {sorted({**inst.defaults, **STATISTICS_DEFAULTS})}")
    full = {**inst.defaults, **STATISTICS_DEFAULTS, **settings}
    key = settings_hash({**full, "instrument_version": inst.version, "dtype": lm.dtype})
    if reuse:
        for old in reversed(store.runs(instrument=instrument, model=lm.name, model_revision=lm.revision,
                                       corpus_hash=corpus.hash, settings_hash=key, status="complete")):
            return RunResult(old, store.tables(old.id), reused=True)

    run = Run(instrument=instrument, instrument_version=inst.version, model=lm.name, model_revision=lm.revision,
              corpus=corpus.name, corpus_hash=corpus.hash, settings=full, settings_hash=key, device=lm.device,
              dtype=lm.dtype, seed=full["seed"], packages=_package_versions(), git_commit=_git_commit(),
              started_at=utcnow(), ended_at=utcnow(), status="running")
    measure_settings = {k: full[k] for k in inst.defaults}
    before, hooks, training, grad = model_checksum(lm.model), _hook_count(lm.model), lm.model.training, torch.is_grad_enabled()
    try:
        _seed_everything(full["seed"])
        primary = inst.measure(lm, corpus, progress=progress, **measure_settings)
        tables = {inst.table: primary}
        for name, summarise in inst.summaries.items():
            tables[name] = summarise(primary, n_resamples=full["bootstrap_resamples"], seed=full["seed"])
        lm.model.train(training)
        torch.set_grad_enabled(grad)
        if model_checksum(lm.model) != before or _hook_count(lm.model) != hooks:
            raise IsolationBreach(f"instrument {instrument!r} left model {lm.name!r} changed "
                                  "(parameters or hooks differ from before the run); its results were not stored")
        for name, table in tables.items():
            validate_table(name, table)
    except Exception as exc:
        run.status, run.error, run.ended_at = "failed", f"{type(exc).__name__}: {exc}", utcnow()
        store.write_run(run, {})
        raise
    run.status, run.ended_at = "complete", utcnow()
    store.write_run(run, tables)
    return RunResult(run, tables, reused=False)


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _git_commit() -> str | None:
    """The commit of the Atlas checkout in use (None when installed from a wheel)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
