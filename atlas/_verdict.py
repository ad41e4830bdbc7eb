"""Criteria and outcomes: how a prediction's evidence becomes a verdict.

A ``Criterion`` is fixed in the prediction module before any data: the statistic,
the threshold and its direction, the CI method and the sample. Its hash versions
the prediction: editing a criterion makes a new version. ``judge`` reads the
confidence interval against the threshold:

    CI entirely on the claimed side   -> supported
    CI entirely on the other side     -> refuted
    CI straddles the threshold        -> inconclusive
    effect or CI missing (NaN)        -> inconclusive: never supported on missing data

A prediction whose model or hardware is unavailable is ``not_run``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from enum import StrEnum

__all__ = ["Criterion", "Outcome"]


class Outcome(StrEnum):
    SUPPORTED = "supported"
    REFUTED = "refuted"
    INCONCLUSIVE = "inconclusive"
    NOT_RUN = "not_run"


_SIDES = {
    ">": (lambda lo, hi, t: lo > t, lambda lo, hi, t: hi <= t),
    ">=": (lambda lo, hi, t: lo >= t, lambda lo, hi, t: hi < t),
    "<": (lambda lo, hi, t: hi < t, lambda lo, hi, t: lo >= t),
    "<=": (lambda lo, hi, t: hi <= t, lambda lo, hi, t: lo > t),
}


@dataclass(frozen=True)
class Criterion:
    """``statistic`` must be ``direction`` ``threshold``, judged by its ``ci`` over ``sample``."""

    statistic: str
    direction: str
    threshold: float
    ci: str = "95% percentile bootstrap over passages"
    sample: str = ""

    def __post_init__(self):
        if self.direction not in _SIDES:
            raise ValueError(f"criterion direction must be one of {list(_SIDES)}, not {self.direction!r}")

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()

    @property
    def version(self) -> str:
        return self.hash[:12]

    def __str__(self) -> str:
        return f"{self.statistic} {self.direction} {self.threshold:g} ({self.ci})"

    def judge(self, effect: float | None, ci_low: float | None, ci_high: float | None) -> Outcome:
        values = (effect, ci_low, ci_high)
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            return Outcome.INCONCLUSIVE
        supported, refuted = _SIDES[self.direction]
        if supported(ci_low, ci_high, self.threshold):
            return Outcome.SUPPORTED
        if refuted(ci_low, ci_high, self.threshold):
            return Outcome.REFUTED
        return Outcome.INCONCLUSIVE
