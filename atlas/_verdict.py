"""Criteria and outcomes: how a prediction's evidence becomes a verdict.

A ``Criterion`` is fixed in the prediction module before any data: the statistic,
the threshold and its direction, the CI method and the sample. Its hash versions
the prediction: editing a criterion makes a new version. ``judge`` reads the
confidence interval against the threshold:

    CI entirely on the claimed side   -> supported
    CI entirely on the other side     -> refuted
    CI straddles the threshold        -> inconclusive
    effect or a CI bound missing or not finite (None, NaN, inf; Python, numpy or torch
    scalars alike)                    -> inconclusive: never supported on missing data

A prediction whose model or hardware is unavailable is ``not_run``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from enum import StrEnum

from ._errors import SettingsError

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
            raise SettingsError(f"criterion direction must be one of {list(_SIDES)}, not {self.direction!r}")

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

    def judge(self, effect, ci_low, ci_high) -> Outcome:
        return self.judge_with_reason(effect, ci_low, ci_high)[0]

    def judge_with_reason(self, effect, ci_low, ci_high) -> tuple[Outcome, str]:
        """The outcome, and why, in words."""
        values = {"effect": effect, "CI low end": ci_low, "CI high end": ci_high}
        missing = [name for name, v in values.items() if not _finite(v)]
        if missing:
            return Outcome.INCONCLUSIVE, f"the {', '.join(missing)} is missing or not finite: no verdict on it"
        lo, hi = float(ci_low), float(ci_high)
        supported, refuted = _SIDES[self.direction]
        if supported(lo, hi, self.threshold):
            return Outcome.SUPPORTED, f"the CI lies on the claimed side of {self.threshold:g}"
        if refuted(lo, hi, self.threshold):
            return Outcome.REFUTED, f"the CI lies on the wrong side of {self.threshold:g}"
        return Outcome.INCONCLUSIVE, f"the CI straddles {self.threshold:g}"


def _finite(value) -> bool:
    """A number that is neither None nor NaN nor infinite, whatever its type (Python, numpy, a 0-d tensor)."""
    if value is None:
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
