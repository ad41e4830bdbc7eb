"""Calibration: each prediction's own decision path judged on evidence simulated from declared models.

A pre-registered verdict is worth as much as its false-positive rate. A prediction declares, in its
marker, the **nulls** it must not call supported (``nulls={name: simulator}``: a world where the claim
is false but the data have the structure real data have -- a layer profile shared by every passage, a
spread between domains or seeds) and an **alternative** at its smallest effect of interest
(``alternative=simulator``). A simulator is ``simulate(rng) -> evidence``: ``{instrument: {table:
DataFrame}}``, or ``{(instrument, model): {...}}`` for a prediction of several models, shaped as the
instruments' tables (``schema/``).

``calibrate`` runs the prediction's **own test function** -- its analysis code and its criterion's
``judge``, through ``Prediction.conclude`` itself, not a re-implementation -- on ``reps`` simulated
draws of each, and counts outcomes: the false "supported" rate under each null, with its Monte-Carlo
standard error sqrt(p (1 - p) / reps), and the power (the "supported" rate) under the alternative.
Draws are seeded from (seed, prediction, simulator name, draw): a calibration is reproducible.

    atlas calibrate P5d P12 --reps 200 --json
"""

from __future__ import annotations

import importlib.util
import math
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest

from ._errors import BadInput, Inconclusive, RefutedVerdict
from ._public import public
from ._predict import Prediction, version_of
from ._profiles import DEFAULT_PROFILE, PROFILES, Profile, using_profile
from ._store import CalibrationRecord
from ._verdict import Criterion, Outcome

__all__ = ["Declared", "Trial", "calibrate", "calibration_records", "discover", "judge_evidence"]

Simulator = Callable[[np.random.Generator], Mapping]


@dataclass(frozen=True)
class Declared:
    """A prediction as its module declares it: the test function and its marker's keywords."""

    id: str
    function: Callable
    marker: dict
    path: Path

    @property
    def criterion(self) -> Criterion:
        return self.marker["criterion"]

    @property
    def nulls(self) -> dict[str, Simulator]:
        return dict(self.marker.get("nulls") or {})

    @property
    def alternative(self) -> Simulator | None:
        return self.marker.get("alternative")

    @property
    def version(self) -> str:
        return version_of(self.function, self.criterion, self.marker["needs"])

    @property
    def model_names(self) -> tuple[str, ...]:
        model = self.marker.get("model")
        if isinstance(model, (tuple, list)):
            return tuple(model)
        if model == "pair":
            return tuple(self.marker.get("default_pair") or ("model-a", "model-b"))
        return (model or "simulated-model",)


class _SimulatedEvidence(Mapping):
    """``prediction.evidence`` over simulated tables: the same keys and the same read-only copies."""

    def __init__(self, tables: Mapping, first_model: str):
        self._tables = {key if isinstance(key, tuple) else (key, first_model): value for key, value in tables.items()}
        self._first = first_model

    def __getitem__(self, key) -> Mapping:
        instrument, model = key if isinstance(key, tuple) else (key, None)
        found = self._tables[instrument, model or self._first]
        return MappingProxyType({name: df.copy() for name, df in found.items()})

    def __iter__(self) -> Iterator:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)


@dataclass
class Trial:
    """Stands where a ``Prediction`` stands in the body, over simulated evidence: ``conclude`` and ``not_run``
    are the Prediction's own; nothing is stored."""

    id: str
    criterion: Criterion
    model_names: tuple[str, ...]
    profile: Profile
    evidence: Mapping
    verdict: dict | None = None
    outcome: Outcome | None = None
    reason: str = ""
    concluded: bool = field(default=False, repr=False)
    #: its evidence is drawn, not measured: no model trained on its passages (``untrained`` asks no Lab run)
    simulated = True

    conclude = Prediction.conclude
    not_run = Prediction.not_run
    bootstrap = Prediction.bootstrap

    @property
    def model_name(self) -> str:
        return " vs ".join(self.model_names)

    def _store(self, outcome: Outcome, *, reason: str = "", **_) -> None:
        self.outcome, self.reason = outcome, reason


def judge_evidence(declared: Declared, evidence: Mapping, profile: Profile | None = None) -> Trial:
    """Run ``declared``'s test function on ``evidence`` ({instrument: {table: DataFrame}}): the Trial holds the
    outcome it came to (``outcome``; ``verdict`` as conclude judged it), with ``profile`` (default ``quick``) the
    active one: its resamples are the body's. A body that returns without a verdict leaves ``outcome`` None."""
    trial = Trial(declared.id, declared.criterion, declared.model_names, profile or PROFILES[DEFAULT_PROFILE],
                  _SimulatedEvidence(evidence, declared.model_names[0]))
    try:
        with using_profile(trial.profile):
            declared.function(trial)
    except (Inconclusive, RefutedVerdict, pytest.skip.Exception):
        pass
    if trial.verdict is not None:
        trial.outcome = trial.verdict["outcome"]
    return trial


def discover(paths: list[Path] | None = None, ids: tuple[str, ...] = ()) -> list[Declared]:
    """The predictions declared in the ``test_*.py`` modules under ``paths`` (default: ./predictions), whose id
    starts with one of ``ids`` (all when none is given)."""
    files = []
    for path in paths or [Path("predictions")]:
        if not path.exists():
            raise BadInput(f"{path}: no such file or folder of prediction modules; pass --predictions DIR")
        files += [path] if path.is_file() else sorted(path.glob("test_*.py"))
    found = []
    for file in files:
        name = f"atlas_calibration_{zlib.crc32(str(file.resolve()).encode()):08x}_{file.stem}"
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for value in vars(module).values():
            for mark in getattr(value, "pytestmark", []):
                if mark.name == "prediction" and callable(value):
                    found.append(Declared(mark.kwargs["id"], value, dict(mark.kwargs), file))
    chosen = [d for d in found if not ids or any(d.id.startswith(i) for i in ids)]
    if ids and not chosen:
        known = ", ".join(sorted(d.id for d in found))
        raise BadInput(f"no prediction id starts with {', '.join(ids)}; the predictions are: {known}")
    return sorted(chosen, key=lambda d: d.id)


def _rate(count: int, reps: int) -> dict:
    p = count / reps if reps else float("nan")
    return {"rate": p, "mc_error": math.sqrt(p * (1 - p) / reps) if reps else float("nan")}


def _draws(declared: Declared, name: str, simulate: Simulator, reps: int, seed: int, profile: Profile) -> dict:
    """Outcome counts of ``reps`` draws of ``simulate``, each judged by the prediction's own body."""
    counts = {o.value: 0 for o in Outcome} | {"no verdict": 0}
    for rep in range(reps):
        rng = np.random.default_rng([seed, zlib.crc32(declared.id.encode()), zlib.crc32(name.encode()), rep])
        trial = judge_evidence(declared, simulate(rng), profile)
        counts[trial.outcome.value if trial.outcome is not None else "no verdict"] += 1
    return {name: count for name, count in counts.items() if count}


def calibrate(predictions: list[Declared], *, reps: int = 200, seed: int = 0, resamples: int | None = None,
              profile: str = DEFAULT_PROFILE, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Per prediction: each declared null's false "supported" rate and the power under its alternative."""
    if reps < 1:
        raise BadInput(f"--reps must be at least 1, not {reps}")
    chosen = PROFILES[profile]
    if resamples is not None:
        chosen = replace(chosen, bootstrap_resamples=resamples)
    results = []
    for declared in predictions:
        entry = {"id": declared.id, "version": declared.version, "criterion": str(declared.criterion),
                 "unit": declared.criterion.unit, "scope": declared.criterion.scope,
                 "sesoi": declared.criterion.sesoi, "nulls": [], "power": []}
        for name, simulate in declared.nulls.items():
            counts = _draws(declared, name, simulate, reps, seed, chosen)
            rate = _rate(counts.get("supported", 0), reps)
            entry["nulls"].append({"name": name, "false_supported": rate["rate"], "mc_error": rate["mc_error"],
                                   "reps": reps, "outcomes": counts})
            if progress:
                progress(f"{declared.id}: null {name}: false supported {rate['rate']:.3f}")
        if declared.alternative is not None:
            name = getattr(declared.alternative, "name", "at the smallest effect of interest")
            counts = _draws(declared, name, declared.alternative, reps, seed, chosen)
            rate = _rate(counts.get("supported", 0), reps)
            entry["power"].append({"name": name, "supported": rate["rate"], "mc_error": rate["mc_error"],
                                   "reps": reps, "outcomes": counts})
        if not declared.nulls:
            entry["note"] = "no nulls declared: its false supported rate is unmeasured"
        results.append(entry)
    return results


def calibration_records(results: list[dict], *, profile: str, resamples: int, seed: int) -> list[CalibrationRecord]:
    """The rates of a calibration as store rows, each with its prediction's version (what the report shows
    beside every verdict of that version)."""
    rows = []
    for entry in results:
        for kind, rates, key in (("null", entry["nulls"], "false_supported"), ("power", entry["power"], "supported")):
            rows += [CalibrationRecord(prediction=entry["id"], version=entry["version"], kind=kind, name=r["name"],
                                       rate=r[key], mc_error=r["mc_error"], reps=r["reps"], profile=profile,
                                       resamples=resamples, seed=seed, outcomes=r["outcomes"]) for r in rates]
    return rows


public("atlas.calibration", Declared, Trial, calibrate, discover, judge_evidence)
