"""Criteria and outcomes: how a prediction's evidence becomes a verdict.

A ``Criterion`` is fixed in the prediction module before any data: the statistic,
the threshold and its direction, the CI method and the sample. Its hash versions
the prediction: editing a criterion makes a new version. ``judge`` reads the
confidence interval against the threshold:

    CI entirely on the claimed side   -> supported
    CI entirely on the other side     -> refuted
    CI wholly inside (threshold - sesoi, threshold + sesoi), when the criterion declares a
    smallest effect of interest       -> no effect of interest (equivalence, TOST-style:
                                         Schuirmann 1987; Lakens 2017)
    CI straddles the threshold        -> inconclusive
    effect or a CI bound missing or not finite (None, NaN, inf; Python, numpy or torch
    scalars alike), or a CI whose low end is above its high end
                                      -> inconclusive, with the reason: never supported on
                                         missing or malformed data

A criterion also declares its **unit** -- the population its claim generalises over and
the CI resamples (passages of one model, domains, layers, seeds, models, probes, inputs)
-- and its **scope**: "this model" (a claim about the model judged), "across models" (a
general claim: judged on one model, the verdict says "in <model>", one draw of the
population) or "across seeds" (a claim about a training recipe, replicated over seeds). And its **scale**: the
kind of number its statistic is (``SCALES``), which fixes the axis the report draws it on.

A prediction whose model or hardware is unavailable is ``not_run``; one whose body failed
after it concluded is ``error`` (the verdict is void, never supported).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum

from ._errors import SettingsError
from ._provenance import content_hash
from ._public import public
from ._stats import holm

__all__ = ["SCALES", "SCOPES", "UNITS", "Criterion", "Outcome", "holm_outcomes"]


class Outcome(StrEnum):
    SUPPORTED = "supported"
    REFUTED = "refuted"
    INCONCLUSIVE = "inconclusive"
    NO_EFFECT = "no_effect"  # the CI lies wholly inside the criterion's region of no effect of interest
    NOT_RUN = "not_run"
    ERROR = "error"  # the body failed after concluding: the verdict is void


#: the populations a claim can generalise over: what its CI resamples
UNITS = ("passages", "domains", "layers", "seeds", "models", "probes", "inputs")
#: what a claim is about: the model judged, models in general, or a training recipe over its seeds
SCOPES = ("this model", "across models", "across seeds")
#: the kinds of number a statistic can be, each drawn on an axis of its own in the report's forest plot
SCALES = {
    "correlation": "a correlation coefficient: linear on [−1, 1]",
    "ratio": "a quotient of positive quantities: a log axis, so that a factor up and down are the same distance",
    "log_ratio": "the log of a ratio, or a difference of logs (nats, decades): linear, centred on 0",
    "share": "a fraction of a whole, at most 1: linear on [0, 1], widened below 0 when a value lies there",
    "difference": "a difference in its statistic's own unit: asinh, linear near 0 and logarithmic beyond",
}


_SIDES = {
    ">": (lambda lo, hi, t: lo > t, lambda lo, hi, t: hi <= t),
    ">=": (lambda lo, hi, t: lo >= t, lambda lo, hi, t: hi < t),
    "<": (lambda lo, hi, t: hi < t, lambda lo, hi, t: lo >= t),
    "<=": (lambda lo, hi, t: hi <= t, lambda lo, hi, t: lo > t),
}


@dataclass(frozen=True)
class Criterion:
    """``statistic`` must be ``direction`` ``threshold``, judged by its ``ci`` over ``sample``.

    ``unit``: what the CI resamples, the population the claim generalises over (one of ``UNITS``);
    ``scope``: one of ``SCOPES``; ``sesoi``: the smallest effect of interest, a distance from the
    threshold (None: none declared, so there is no "no effect of interest" outcome)."""

    statistic: str
    direction: str
    threshold: float
    ci: str = "95% percentile bootstrap over passages"
    sample: str = ""
    unit: str = "passages"
    scope: str = "this model"
    sesoi: float | None = None
    scale: str = "difference"

    def __post_init__(self):
        if self.direction not in _SIDES:
            raise SettingsError(f"criterion direction must be one of {list(_SIDES)}, not {self.direction!r}")
        if self.unit not in UNITS:
            raise SettingsError(f"criterion unit must be one of {list(UNITS)}, not {self.unit!r}")
        if self.scope not in SCOPES:
            raise SettingsError(f"criterion scope must be one of {list(SCOPES)}, not {self.scope!r}")
        if self.scale not in SCALES:
            raise SettingsError(f"criterion scale must be one of {list(SCALES)}, not {self.scale!r}")
        if self.sesoi is not None and not (_finite(self.sesoi) and self.sesoi > 0):
            raise SettingsError(f"criterion sesoi must be a positive finite number or None, not {self.sesoi!r}")

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def hash(self) -> str:
        """The hex SHA-256 of the criterion's canonical JSON (``atlas._provenance.content_hash``)."""
        return content_hash(self.as_dict()).removeprefix("sha256:")

    @property
    def version(self) -> str:
        return self.hash[:12]

    def __str__(self) -> str:
        return f"{self.statistic} {self.direction} {self.threshold:g} ({self.ci}; unit: {self.unit})"

    def scope_of(self, models: tuple[str, ...] | list[str]) -> str:
        """The scope a verdict on ``models`` can claim. A claim across models (or seeds) whose CI does not resample
        models (seeds) holds "in" what it was judged on -- one model, or one model pair compared: one draw of the
        population the claim is about; a claim about the model judged holds "in" it."""
        named = " vs ".join(models) or "no model"
        population = {"across models": "models", "across seeds": "seeds"}.get(self.scope)
        if population is None:
            return f"in {named}"
        if self.unit != population:
            return f"in {named} (the claim is {self.scope}; its CI does not resample {population}: one draw)"
        return f"{self.scope}: {', '.join(models)}"

    def judge(self, effect, ci_low, ci_high) -> Outcome:
        return self.judge_with_reason(effect, ci_low, ci_high)[0]

    def judge_with_reason(self, effect, ci_low, ci_high) -> tuple[Outcome, str]:
        """The outcome, and why, in words."""
        values = {"effect": effect, "CI low end": ci_low, "CI high end": ci_high}
        missing = [name for name, v in values.items() if not _finite(v)]
        if missing:
            return Outcome.INCONCLUSIVE, f"the {', '.join(missing)} is missing or not finite: no verdict on it"
        lo, hi = float(ci_low), float(ci_high)
        if lo > hi:
            return Outcome.INCONCLUSIVE, (f"the CI [{lo:g}, {hi:g}] is inverted (low end above high end): "
                                          "no verdict on it")
        supported, refuted = _SIDES[self.direction]
        if supported(lo, hi, self.threshold):
            return Outcome.SUPPORTED, f"the CI lies on the claimed side of {self.threshold:g}"
        if refuted(lo, hi, self.threshold):
            return Outcome.REFUTED, f"the CI lies on the wrong side of {self.threshold:g}"
        if self.sesoi is not None and self.threshold - self.sesoi < lo and hi < self.threshold + self.sesoi:
            return Outcome.NO_EFFECT, (f"the CI lies within {self.threshold:g} +- {self.sesoi:g}, the smallest effect "
                                       "of interest: no effect of interest")
        return Outcome.INCONCLUSIVE, f"the CI straddles {self.threshold:g}"


def _finite(value) -> bool:
    """A number that is neither None nor NaN nor infinite, whatever its type (Python, numpy, a 0-d tensor)."""
    if value is None:
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def holm_outcomes(verdicts) -> dict[int, dict]:
    """Each general-form verdict's outcome after Holm's (1979) adjustment across the general forms judged in the
    same session (the family a reader sees at once), by verdict id: a supported (or refuted) verdict survives when
    its one-sided p-value -- inverted from its own CI, so it agrees with it (``atlas._stats.one_sided_p``) --
    adjusted, stays at or below 0.025, the level of the 95% CI's end; otherwise it is inconclusive."""
    families: dict[str, list] = {}
    for v in verdicts:
        if v.form == "general" and v.outcome in ("supported", "refuted", "inconclusive", "no_effect") \
                and v.evidence.get("p_value") is not None:
            families.setdefault(v.session, []).append(v)
    out = {}
    for family in families.values():
        # the p-value of the verdict's own side: against the claim when supported, for it when refuted
        p = [v.evidence["p_value"] if v.outcome != "refuted" else 1 - v.evidence["p_value"] for v in family]
        for v, adjusted in zip(family, holm(p)):
            survives = v.outcome in ("supported", "refuted") and adjusted <= 0.025
            out[v.id] = {"p_adjusted": adjusted, "family": len(family),
                         "outcome": v.outcome if survives or v.outcome == "no_effect" else "inconclusive"}
    return out


public("atlas", Criterion, Outcome)
