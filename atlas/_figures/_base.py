"""What every figure shares: scales, colours, axes, the frame, and the registry of instrument figures."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from .._jsonsafe import json_safe

OUTCOME_COLOURS = {"supported": "#2e7d32", "refuted": "#c62828", "inconclusive": "#b7791f", "no_effect": "#3b6ea5",
                   "not_run": "#8a8a8a", "error": "#7b1f1f"}
_NEG, _MID, _POS = (33, 102, 172), (247, 247, 247), (178, 24, 43)  # RdBu ends and centre
_NEG_HEX, _POS_HEX = "#2166ac", "#b2182b"
_LIGHT, _DARK = (242, 240, 247), (84, 39, 143)  # Purples
WIDTH = 1000  # every figure's viewBox width; CSS scales it down to the page


# --- scales --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """Maps data in [lo, hi] to pixels in [a, b] (``a > b`` for a y axis, so that up is larger).

    ``kind``: ``linear``, ``log`` (lo > 0) or ``asinh`` (linear within about ±``width``). Values outside
    [lo, hi] are clamped to the ends (``clipped`` tells which were).
    """

    kind: str
    lo: float
    hi: float
    a: float
    b: float
    width: float = 1.0

    def transform(self, v: float) -> float:
        """The coordinate the scale is linear in: v, log10 v or asinh(v / width)."""
        if self.kind == "log":
            return math.log10(v)
        if self.kind == "asinh":
            return math.asinh(v / self.width)
        return v

    def inverse(self, t: float) -> float:
        if self.kind == "log":
            return 10.0 ** t
        if self.kind == "asinh":
            return self.width * math.sinh(t)
        return t

    def __call__(self, v: float) -> float:
        v = min(max(v, self.lo), self.hi)
        t0, t1 = self.transform(self.lo), self.transform(self.hi)
        return self.a + (self.transform(v) - t0) / (t1 - t0) * (self.b - self.a)

    def clipped(self, v: float) -> bool:
        return v < self.lo or v > self.hi

    @property
    def note(self) -> str:
        if self.kind == "log":
            return "log scale"
        if self.kind == "asinh":
            return f"asinh scale: linear within ±{_fmt(self.width)}, logarithmic beyond"
        return "linear scale"

    def ticks(self, min_gap: float = 44) -> list[dict]:
        """Round values inside [lo, hi], at least ``min_gap`` pixels apart: ``[{"at", "label", "value"}]``."""
        if self.kind == "linear":
            n = max(1, int(abs(self.b - self.a) // min_gap))
            step = _nice_step((self.hi - self.lo) / n)
            first = math.ceil(self.lo / step - 1e-9)
            values = [k * step for k in range(first, int(math.floor(self.hi / step + 1e-9)) + 1)]
        else:
            values = self._round_values()
        chosen: list[float] = []
        for v in values:
            if self.lo <= v <= self.hi and all(abs(self(v) - self(c)) >= min_gap for c in chosen):
                chosen.append(v)
        return [{"at": self(v), "label": _fmt(v), "value": v} for v in sorted(chosen)]

    def _round_values(self) -> list[float]:
        """Log and asinh ticks by priority: 0, powers of ten, then 5 and 2 times them (kept when room)."""
        big = max(abs(self.lo), abs(self.hi))
        small = self.lo if self.kind == "log" else self.width
        ks = range(math.floor(math.log10(small)) - 1, math.ceil(math.log10(big)) + 1)
        signs = (1,) if self.kind == "log" else (1, -1)
        values = [] if self.kind == "log" else [0.0]
        for digit in (1, 5, 2):
            values += [s * digit * 10.0 ** k for k in sorted(ks, reverse=True) for s in signs]
        return values


def _nice_step(raw: float) -> float:
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    mag = 10.0 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))


def _fmt(v: float) -> str:
    """A short label: 3 significant digits (whole numbers in [1e3, 1e4)), exponent form outside [1e-3, 1e4),
    a true minus sign."""
    if v == 0:
        return "0"
    if 1e3 <= abs(v) < 1e4:
        text = f"{v:.0f}"
    else:
        text = f"{v:.0e}" if (abs(v) < 1e-3 or abs(v) >= 1e4) and _is_round(v) else f"{v:.3g}"
    text = re.sub(r"e([+-])0*(\d)", lambda m: f"e{'' if m[1] == '+' else '-'}{m[2]}", text)
    return text.replace("-", "−")


def _is_round(v: float) -> bool:
    mantissa = abs(v) / 10.0 ** math.floor(math.log10(abs(v)))
    return abs(mantissa - round(mantissa)) < 1e-6


def _finite(values) -> list[float]:
    out = []
    for v in values:
        if v is not None:
            v = float(v)
            if math.isfinite(v):
                out.append(v)
    return out


def linear_scale(values, a: float, b: float, *, include=(), bounds: tuple[float, float] | None = None) -> Scale:
    """A linear scale over ``values`` and ``include`` (e.g. 0, a threshold), widened to round ends and
    kept within ``bounds``."""
    vs = _finite([*values, *include]) or [0.0, 1.0]
    lo, hi = min(vs), max(vs)
    if hi - lo < 1e-12:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    step = _nice_step((hi - lo) / 5)
    nice_lo, nice_hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    lo, hi = nice_lo - step * (nice_lo > lo), nice_hi + step * (nice_hi < hi)  # rounding never uncovers a value
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return Scale("linear", lo, hi, a, b)


def log_scale(values, a: float, b: float, *, include=()) -> Scale:
    """A log scale over the positive ``values`` and ``include``, 10% of a decade beyond each end."""
    vs = [v for v in _finite([*values, *include]) if v > 0] or [1.0]
    lo, hi = min(vs), max(vs)
    if hi / lo < 1.5:
        lo, hi = lo / 1.25, hi * 1.25
    return Scale("log", lo / 10 ** 0.1, hi * 10 ** 0.1, a, b)


def asinh_scale(values, a: float, b: float, *, include=(), width: float | None = None,
                symmetric: bool = False) -> Scale:
    """An asinh scale over ``values``: ``width`` is where it turns from linear to logarithmic, by default the
    power of ten at or below the smallest non-zero magnitude, but at most four decades below the largest
    (beyond that the axis would be spent on noise around 0); ``symmetric`` centres 0."""
    vs = _finite([*values, *include]) or [0.0]
    if width is None:
        mags = [abs(v) for v in vs if v != 0] or [1.0]
        width = 10.0 ** math.floor(math.log10(max(min(mags), max(mags) * 1e-4)))
    lo, hi = min(vs + [0.0]), max(vs + [0.0])
    if symmetric:
        lo, hi = -max(-lo, hi), max(-lo, hi)
    pad = 0.06 * (math.asinh(hi / width) - math.asinh(lo / width)) or 1.0
    lo, hi = width * math.sinh(math.asinh(lo / width) - pad), width * math.sinh(math.asinh(hi / width) + pad)
    return Scale("asinh", lo, hi, a, b, width)


# --- colours -------------------------------------------------------------------------------------------


def _mix(c0, c1, t: float) -> str:
    t = min(max(t, 0.0), 1.0)
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(c0, c1, strict=True))


def diverging(v: float, limit: float) -> str:
    """RdBu: blue below 0, white at 0, red above, saturated at ±``limit``."""
    t = 0.0 if limit <= 0 else v / limit
    return _mix(_MID, _POS, t) if t >= 0 else _mix(_MID, _NEG, -t)


def sequential(t: float) -> str:
    """Purples, light at 0 to dark at 1."""
    return _mix(_LIGHT, _DARK, t)


# --- the frame every figure shares ---------------------------------------------------------------------


def _x_axis(scale: Scale, y: float, label: str, *, grid: tuple[float, float] | None = None,
            ticks: list[dict] | None = None) -> dict:
    return {"orient": "x", "at": y, "start": min(scale.a, scale.b), "end": max(scale.a, scale.b),
            "ticks": scale.ticks(min_gap=60) if ticks is None else ticks, "label": label, "grid": grid}


def _y_axis(scale: Scale, x: float, label: str, *, grid: tuple[float, float] | None = None,
            ticks: list[dict] | None = None) -> dict:
    return {"orient": "y", "at": x, "start": min(scale.a, scale.b), "end": max(scale.a, scale.b),
            "ticks": scale.ticks(min_gap=24) if ticks is None else ticks, "label": label, "grid": grid}


def _band_ticks(labels: list, start: float, step: float, min_gap: float = 12) -> list[dict]:
    """Ticks of categories (layers, heads, domains) at band centres, thinned to every k-th when crowded."""
    every = max(1, math.ceil(min_gap / step)) if step > 0 else 1
    return [{"at": start + (i + 0.5) * step, "label": str(label), "value": label}
            for i, label in enumerate(labels) if i % every == 0]


def _frame(title: str, caption: str, height: float, **parts) -> dict:
    return {"title": title, "caption": caption, "width": WIDTH, "height": round(height), "axes": [], **parts}


def _caption(labels: dict, n: str) -> str:
    return f"{labels.get('model', '?')} · {labels.get('corpus', '?')} · {n} · run {str(labels.get('run', ''))[:8]}"


# --- registry --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    kind: str  # the template macro that draws it
    tables: tuple[str, ...]  # the run's tables it reads: drawn when all are present
    build: Callable


FIGURES: dict[str, Figure] = {}


def figure(kind: str, *tables: str):
    """Register ``fn(tables, labels, seed) -> dict | None`` as the figure ``kind`` of ``tables``."""

    def register(fn):
        FIGURES[kind] = Figure(kind, tables, fn)
        return fn

    return register


def figures_for(tables: dict, labels: dict, seed: dict) -> list[dict]:
    """Every registered figure whose tables the run has, in registration order (``kind`` set)."""
    out = []
    for fig in FIGURES.values():
        if all(t in tables and not tables[t].empty for t in fig.tables):
            geometry = fig.build({t: tables[t] for t in fig.tables}, labels, seed)
            if geometry is not None:
                out.append({"kind": fig.kind, **geometry})
    return out


def _records(df) -> list[dict]:
    """A stored table's rows as plain values, each missing one (NaN, pandas' NA) as None (``json_safe``)."""
    return json_safe(df.to_dict(orient="records"))
