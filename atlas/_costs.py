"""The cost model of the plan (``atlas plan``): each instrument's wall time and peak memory, from calibration.

Per instrument, on a profile's settings, with P the model's parameters and N the passages it measures
(``AtlasSession.corpus_for``)::

    seconds  ≈ s0 + a × P × N        (a fixed cost, and work that grows with the model and the passages)
    peak MiB ≈ m0 + b × P            (the process's resident set above its level before the run)

The coefficients are fitted (``fit_cost``, least squares, none negative) to real timings that
``benchmarks/costs.py`` takes on a few models with the default profile, and written to
``atlas/costs.json`` with the machine they were taken on. An instrument that was not timed on
two model sizes has no estimate: the plan says "no estimate (uncalibrated)" rather than guess one.

A Lab training is timed whole, once per recipe (``benchmarks/costs.py --lab``: seed 0 in a scratch folder, as
the Lab trains it), and scaled by its steps: ``seconds ≈ timed seconds × steps / timed steps`` (``LabCost``),
the peak as timed. A recipe that was not timed has no estimate.

    >>> model = fit_cost([(1e5, 24, 0.5, 10.0), (1e8, 24, 20.5, 400.0)])
    >>> round(model.seconds(1e8, 24), 1), round(model.peak_mb(1e5), 1)
    (20.5, 10.0)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ._public import public

__all__ = ["COST_MODEL_FILE", "Cost", "LabCost", "calibrated", "estimate", "fit_cost", "lab_calibrated",
           "seconds_for", "training_estimate"]

#: the calibration ``benchmarks/costs.py`` writes
COST_MODEL_FILE = Path(__file__).with_name("costs.json")


@dataclass(frozen=True)
class Cost:
    """One instrument's fitted coefficients (see the module docstring)."""

    s0: float
    a: float
    m0: float
    b: float

    def seconds(self, parameters: float, passages: int) -> float:
        return self.s0 + self.a * parameters * passages

    def peak_mb(self, parameters: float) -> float:
        return self.m0 + self.b * parameters


@dataclass(frozen=True)
class LabCost:
    """One recipe's timed training: ``steps`` steps in ``seconds``, ``peak_mb`` MiB above the process's level."""

    steps: int
    seconds: float
    peak_mb: float

    def seconds_for(self, steps: int) -> float:
        return self.seconds * steps / self.steps


def _line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Intercept and slope of ys against xs (two distinct xs at least) by least squares, neither negative: a
    negative intercept gives the line through zero instead."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = max(0.0, sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs))
    if my - slope * mx < 0:
        return 0.0, sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)
    return my - slope * mx, slope


def fit_cost(points: list[tuple[float, int, float, float]]) -> Cost:
    """The cost of one instrument from its timings, (parameters, passages, seconds, peak MiB) each, on two model
    sizes at least: one size cannot tell the fixed cost from the work (``benchmarks/costs.py`` fits none then)."""
    s0, a = _line([p * n for p, n, _, _ in points], [s for _, _, s, _ in points])
    m0, b = _line([p for p, _, _, _ in points], [max(0.0, m) for _, _, _, m in points])
    return Cost(s0, a, m0, b)


@cache
def _calibration() -> dict:
    if not COST_MODEL_FILE.exists():
        return {}
    return json.loads(COST_MODEL_FILE.read_text(encoding="utf-8"))


def calibrated() -> dict[str, Cost]:
    """The fitted cost of every calibrated instrument (none when ``atlas/costs.json`` is missing)."""
    return {name: Cost(**entry["cost"]) for name, entry in _calibration().get("instruments", {}).items()
            if entry["cost"]}


def lab_calibrated() -> dict[str, LabCost]:
    """The timed training of every calibrated Lab recipe, by recipe name."""
    return {name: LabCost(entry["steps"], entry["seconds"], entry["peak_mb"])
            for name, entry in _calibration().get("lab", {}).items()}


def seconds_for(instrument: str, parameters: float, passages: int) -> tuple[float, float] | None:
    """(seconds, peak MiB) the cost model expects of ``instrument`` on a model of ``parameters`` parameters over
    ``passages`` passages; None for an instrument not calibrated."""
    cost = calibrated().get(instrument)
    if cost is None:
        return None
    return cost.seconds(parameters, passages), cost.peak_mb(parameters)


def estimate(instrument: str, model, passages: int) -> tuple[float, float] | None:
    """(seconds, peak MiB) the cost model expects of ``instrument`` on ``model`` (a torch module) over ``passages``
    passages; None for an instrument not calibrated. The plan lists it before a run, the run's summary beside
    the time measured."""
    return seconds_for(instrument, sum(p.numel() for p in model.parameters()), passages)


def training_estimate(recipe: str, steps: int) -> tuple[float, float] | None:
    """(seconds, peak MiB) the cost model expects of training Lab recipe ``recipe`` (its name) for ``steps`` steps
    in one process; None for a recipe not timed."""
    cost = lab_calibrated().get(recipe)
    return None if cost is None else (cost.seconds_for(steps), cost.peak_mb)


public("atlas", Cost, fit_cost)
