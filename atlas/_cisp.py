"""CISP, the protocol layer: every instrument run goes through ``run_instrument``.

It enforces what the Framework asks of a run:

* **isolation** -- a run starts from the model as it was loaded (its checksum
  must equal the one taken at load time), seeds are fixed, and afterwards the
  parameters (per-parameter sums in float64), hooks, attention implementation,
  grad mode and train mode must be as before; a run that leaves the model changed
  is stored as failed, never as a valid measurement;
* **validation** -- every table is checked against its schema (great-expectations)
  before anything is written; a table that fails is stored as a failed run with
  the error, and no measurement row is written;
* **provenance and reuse** -- a run records model revision, corpus hash, settings
  hash (which includes the instrument's version), device, dtype, seed, package
  versions and git commit; a complete stored run with the same key is reused, a
  run of the same instrument under an older version or another model revision is
  *stale* and never reused;
* **sequencing** -- every step (measured, reused, failed, refused) is written to
  the protocol log (``ProtocolEvent``) of its session, in order. Predictions
  declare the instruments they need; ``atlas._predict`` gathers those inputs
  through CISP before judging and refuses a prediction whose input failed.
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
from ._models import LoadedModel, load_model, model_checksum
from ._schema import validate_table
from ._store import ProtocolEvent, Run, Store, utcnow
from .instruments import INSTRUMENTS

__all__ = ["IsolationBreach", "RunResult", "model_checksum", "run_instrument", "settings_hash"]

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


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_instrument(store: Store, lm: LoadedModel, corpus: Corpus, instrument: str, *, reuse: bool = True,
                   progress: bool = True, session: str = "", prediction: str | None = None,
                   **settings) -> RunResult:
    """Measure ``instrument`` on ``lm`` and ``corpus``; validate, store and return its tables.

    ``settings`` override the instrument's defaults and the statistics defaults
    (``bootstrap_resamples``, ``seed``). ``session`` and ``prediction`` label the
    protocol-log entries. Raises ``SchemaViolation`` or ``IsolationBreach`` after
    storing the run as failed.
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
    others = {m: full[m] if isinstance(full[m], LoadedModel) else load_model(full[m], device=lm.device, dtype=lm.dtype)
              for m in inst.models if full[m]}
    full.update({m: o.name for m, o in others.items()})
    key = settings_hash({**full, "instrument_version": inst.version, "dtype": lm.dtype,
                         **{f"{m}_revision": o.revision for m, o in others.items()}})

    def log(action: str, run_id: str | None = None, reason: str = "") -> None:
        store.write_event(ProtocolEvent(session=session, prediction=prediction, instrument=instrument,
                                        model=lm.name, corpus_hash=corpus.hash, action=action, run_id=run_id,
                                        reason=reason))

    stale = ""
    if reuse:
        stored = store.runs(instrument=instrument, model=lm.name, corpus_hash=corpus.hash, status="complete",
                            provenance="measured")
        for old in reversed(stored):
            if old.settings_hash == key and old.model_revision == lm.revision:
                log("reused", old.id, f"identical stored run of {old.started_at:%Y-%m-%d %H:%M}")
                return RunResult(old, store.tables(old.id), reused=True)
        stale = _staleness(stored, inst.version, lm.revision)

    run = Run(instrument=instrument, instrument_version=inst.version, model=lm.name, model_revision=lm.revision,
              corpus=corpus.name, corpus_hash=corpus.hash, settings=full, settings_hash=key, device=lm.device,
              dtype=lm.dtype, seed=full["seed"], packages=_package_versions(), git_commit=_git_commit(),
              started_at=utcnow(), ended_at=utcnow(), status="running")
    measure_settings = {**{k: full[k] for k in inst.defaults}, **others}
    state = _model_state(lm.model)
    try:
        if lm.checksum and state[0] != lm.checksum:
            raise IsolationBreach(f"model {lm.name!r} was changed after it was loaded (by code outside CISP); "
                                  "reload it before measuring")
        _seed_everything(full["seed"])
        measured = inst.measure(lm, corpus, progress=progress, **measure_settings)
        tables = dict(measured)
        primary = tables[inst.table]
        for name, summarise in inst.summaries.items():
            tables[name] = summarise(primary, n_resamples=full["bootstrap_resamples"], seed=full["seed"])
        changed = [what for what, a, b in zip(_STATE_NAMES, state, _model_state(lm.model)) if a != b]
        if changed:
            lm.model.train(state[3])  # leave the process usable; the breach is still reported
            torch.set_grad_enabled(state[4])
            raise IsolationBreach(f"instrument {instrument!r} left model {lm.name!r} changed "
                                  f"({', '.join(changed)} differ from before the run); its results were not stored")
        for name, table in tables.items():
            validate_table(name, table)
    except Exception as exc:
        run.status, run.error, run.ended_at = "failed", f"{type(exc).__name__}: {exc}", utcnow()
        store.write_run(run, {})
        log("failed", run.id, run.error)
        raise
    run.status, run.ended_at = "complete", utcnow()
    store.write_run(run, tables)
    log("measured", run.id, stale or "no stored run with these settings")
    return RunResult(run, tables, reused=False)


_STATE_NAMES = ("parameters", "hooks", "attention implementation", "train mode", "grad mode")


def _model_state(model: torch.nn.Module) -> tuple:
    """What a run must leave as it found it, in the order of ``_STATE_NAMES``."""
    return (model_checksum(model), _hook_count(model), getattr(model.config, "_attn_implementation", None),
            model.training, torch.is_grad_enabled())


def _staleness(stored: list[Run], version: str, revision: str) -> str:
    """Why stored runs of the same instrument, model and corpus were not reused, if any are stale."""
    older = [r for r in stored if r.instrument_version != version or r.model_revision != revision]
    if not older:
        return ""
    r = older[-1]
    what = (f"instrument v{r.instrument_version}, now v{version}" if r.instrument_version != version
            else f"model revision {r.model_revision[:24]}, now {revision[:24]}")
    return f"stale: {len(older)} stored run(s) not reused (newest {r.id[:8]}: {what})"


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
