"""The report's figures as geometry: pure functions from stored tables to what an inline SVG draws.

A figure is one function registered with ``@figure(kind, *tables)``: given a run's tables
(``{name: DataFrame}``), what labels the run (``labels``: model, corpus, run id, settings) and the seed's
reference record, it returns a dict of coordinates and strings, or None when the tables hold nothing to
draw. ``templates/_figures.html.j2`` has one macro per ``kind`` that draws it, and ``draw`` adds the
frame every figure shares (title, caption, axes). Adding a figure for a new table is one function here and
one macro there. Nothing here writes markup: geometry is testable without a browser, and every label stays
data for the autoescaping templates. Every figure names its axes, their units, the model, the corpus and n.

Scales (``Scale``): linear; logarithmic for ratios, so that a factor of 2 up and down are the same
distance (Cleveland 1985, *The Elements of Graphing Data*, ch. 2); and the inverse hyperbolic sine
asinh(v / w) for quantities that change sign and span decades (differences, Hessian eigenvalues): linear
within about ±w, logarithmic beyond (Burbidge, Magee & Robb 1988, JASA 83:123). Ticks are round numbers
(1, 2, 2.5, 5 × 10^k), at least ``min_gap`` pixels apart.

The forest plot follows Lewis & Clarke (2001, BMJ 322:1479): one row per verdict, the effect as a dot,
its 95% CI as a bar, the criterion's threshold as a line; the heatmaps use ColorBrewer's diverging RdBu and
sequential Purples schemes (Harrower & Brewer 2003, Cartographic Journal 40:27).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from ._jsonsafe import json_safe

__all__ = ["FIGURES", "OUTCOME_COLOURS", "Figure", "Scale", "asinh_scale", "diverging", "figure", "figures_for",
           "forest", "history", "linear_scale", "log_scale", "sequential", "statistic_kind"]

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


# --- verdicts: the forest plot and a prediction's history ----------------------------------------------


def statistic_kind(criterion: dict) -> str:
    """``correlation`` (Spearman/Pearson/Kendall, on [−1, 1]), ``ratio`` (a quotient, log scale: its
    statistic has a spaced " / " and no difference in it) or ``difference`` (everything else)."""
    statistic = str(criterion.get("statistic", ""))
    if re.search(r"\b(rho|spearman|pearson|kendall|tau|correlation)\b", statistic, re.I):
        return "correlation"
    if " / " in statistic and not re.search(r"\bminus\b| - ", statistic):
        return "ratio"
    return "difference"


_KINDS = {  # group title in the forest plot, axis label in a history panel
    "correlation": ("Correlations (ρ)", "correlation ρ"),
    "ratio": ("Ratios", "ratio"),
    "difference": ("Differences, each in its statistic's own unit", "difference"),
}


def _value_scale(kind: str, values: list[float], a: float, b: float, thresholds: list[float]) -> Scale:
    """The scale of a statistic kind: correlations on [−1, 1], ratios on a log scale (linear if a value is
    not positive), differences on an asinh scale centred on 0."""
    values = _finite(values)
    if kind == "correlation":
        return Scale("linear", -1.0, 1.0, a, b)
    if kind == "ratio" and all(v > 0 for v in values + thresholds):
        return log_scale(values, a, b, include=thresholds)
    if kind == "ratio":
        return linear_scale(values, a, b, include=thresholds)
    return asinh_scale(values, a, b, include=thresholds, symmetric=True)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _interval_text(effect, lo, hi, n) -> str:
    if effect is None:
        return "no estimate"
    ci = "(no CI)" if lo is None or hi is None else f"[{_fmt(lo)}, {_fmt(hi)}]"
    return f"{_fmt(effect)} {ci}" + ("" if n is None else f", n = {n}")


def forest(verdicts: list[dict]) -> dict | None:
    """One row per verdict that was reached (not ``not_run``), grouped by statistic kind, each group on its
    own scale. ``verdicts``: dicts with prediction, model, corpus, profile, outcome, effect, ci_low, ci_high,
    n, criterion and href. Rows: effect dot and CI bar in the outcome's colour, threshold line, values."""
    reached = [v for v in verdicts if v["outcome"] != "not_run"]
    if not reached:
        return None
    label_w, x0, x1 = 8, 350, 760
    row_h = 32 if len(reached) <= 10 else 26  # many verdicts: tighter rows, so that the overview fits a screen
    y = 62.0
    groups = []
    for kind, (title, _) in _KINDS.items():
        rows = [v for v in reached if statistic_kind(v["criterion"]) == kind]
        if not rows:
            continue
        values = [x for v in rows for x in (v["effect"], v["ci_low"], v["ci_high"])]
        thresholds = _finite(v["criterion"].get("threshold") for v in rows)
        scale = _value_scale(kind, values, x0, x1, thresholds)
        top = y + 20
        drawn = []
        for i, v in enumerate(rows):
            mid = top + i * row_h + row_h / 2
            effect, lo, hi = (None if x is None else float(x) for x in (v["effect"], v["ci_low"], v["ci_high"]))
            threshold = float(v["criterion"].get("threshold", 0.0))
            second = " · ".join(str(x) for x in (v["outcome"].replace("_", " "), v["model"], v["corpus"] or "—",
                                                  v["profile"] or "—"))
            drawn.append({
                "y": mid, "top": mid - row_h / 2 + 3, "bottom": mid + row_h / 2 - 3,
                "prediction": _short(v["prediction"], 44), "second": _short(second, 58), "href": v.get("href"),
                "outcome": v["outcome"], "colour": OUTCOME_COLOURS.get(v["outcome"], "#555"),
                "x_effect": None if effect is None else scale(effect),
                "x_lo": None if lo is None or hi is None else scale(lo),
                "x_hi": None if lo is None or hi is None else scale(hi),
                "clipped": any(x is not None and scale.clipped(x) for x in (effect, lo, hi)),
                "x_threshold": scale(threshold), "value": _interval_text(effect, lo, hi, v.get("n")),
                "title": (f"{v['prediction']} on {v['model']}, {v['corpus'] or '—'}, {v['profile'] or '—'}: "
                          f"{v['outcome'].replace('_', ' ')}; {v['criterion'].get('statistic', '')} "
                          f"{v['criterion'].get('direction', '')} {_fmt(threshold)}; "
                          f"{_interval_text(effect, lo, hi, v.get('n'))}"),
            })
        bottom = top + len(rows) * row_h
        groups.append({"kind": kind, "title": f"{title}: {scale.note}", "y": y + 12, "rows": drawn,
                       "axis": _x_axis(scale, bottom + 4, "", grid=(top, bottom))})
        y = bottom + 46
    fig = _frame("Verdicts: effect and 95% CI against the criterion's threshold",
                 f"{len(reached)} verdicts reached; one scale per statistic kind", y,
                 groups=groups, label_x=label_w, x0=x0, x1=x1, value_x=x1 + 12,
                 legend=[{"label": o.replace("_", " "), "colour": c} for o, c in OUTCOME_COLOURS.items()
                         if o != "not_run"])
    for g in groups:
        fig["axes"].append(g["axis"])
    return fig


def history(verdicts: list[dict]) -> list[dict]:
    """A prediction's stored verdicts over time, one panel per (model, corpus, profile), oldest first:
    effect dot and CI whisker in the outcome's colour, the threshold of each verdict's version as a step
    line, a dotted line where the version (the criterion) changed. ``verdicts``: dicts as for ``forest``
    plus created_at (datetime) and version, in the order written."""
    panels: dict[tuple, list[dict]] = {}
    for v in verdicts:
        panels.setdefault((v["model"], v["corpus"] or "—", v["profile"] or "—"), []).append(v)
    out = []
    for (model, corpus, profile), rows in panels.items():
        kind = statistic_kind(rows[-1]["criterion"])
        x0, x1, y_top, y_bottom = 90, WIDTH - 30, 48, 238
        values = [x for v in rows for x in (v["effect"], v["ci_low"], v["ci_high"])]
        thresholds = _finite(v["criterion"].get("threshold") for v in rows)
        scale = _value_scale(kind, values, y_bottom, y_top, thresholds)
        step = (x1 - x0) / len(rows)
        points, steps, changes = [], [], []
        for i, v in enumerate(rows):
            cx = x0 + (i + 0.5) * step
            effect, lo, hi = (None if x is None else float(x) for x in (v["effect"], v["ci_low"], v["ci_high"]))
            threshold = float(v["criterion"].get("threshold", 0.0))
            y_threshold = scale(threshold)
            steps.append(f"{x0 + i * step:.1f},{y_threshold:.1f} {x0 + (i + 1) * step:.1f},{y_threshold:.1f}")
            if i and v["version"] != rows[i - 1]["version"]:
                changes.append({"x": x0 + i * step, "label": f"v{v['version'][:6]}"})
            points.append({
                "x": cx, "colour": OUTCOME_COLOURS.get(v["outcome"], "#555"), "outcome": v["outcome"],
                "y": None if effect is None else scale(effect),
                "y_lo": None if lo is None or hi is None else scale(lo),
                "y_hi": None if lo is None or hi is None else scale(hi),
                "title": (f"{v['created_at']:%Y-%m-%d %H:%M} v{v['version']}: {v['outcome'].replace('_', ' ')}, "
                          f"{_interval_text(effect, lo, hi, v.get('n'))}")})
        dates = [f"{v['created_at']:%m-%d %H:%M}" for v in rows]
        criterion = rows[-1]["criterion"]
        fig = _frame(f"{model} · {corpus} · profile {profile}",
                     f"{len(rows)} verdict{'s' if len(rows) > 1 else ''}; {criterion.get('statistic', '')} "
                     f"{criterion.get('direction', '')} {_fmt(thresholds[-1] if thresholds else 0)}; {scale.note}",
                     y_bottom + 44, points=points, threshold=" ".join(steps), changes=changes,
                     y_top=y_top, y_bottom=y_bottom)
        fig["axes"] = [_y_axis(scale, x0, _KINDS[kind][1], grid=(x0, x1)),
                       {"orient": "x", "at": y_bottom, "start": x0, "end": x1, "label": "verdicts in the order stored",
                        "ticks": _band_ticks(dates, x0, step, min_gap=80), "grid": None}]
        out.append(fig)
    return out


# --- instrument figures ----------------------------------------------------------------------------------


@figure("perplexity_bars", "perplexity_domains")
def perplexity_bars(tables: dict, labels: dict, seed: dict) -> dict:
    """Perplexity per domain as bars from 0 with 95% bootstrap CI whiskers; the seed's values as ticks."""
    rows = _records(tables["perplexity_domains"])
    reference = {r["domain"]: r["ppl"] for r in seed.get("domain_perplexity", {}).get("rows", [])}
    x0, x1, top, row_h = 250, 880, 44, 24
    bottom = top + row_h * len(rows)
    scale = linear_scale([v for r in rows for v in (r["ppl"], r.get("ci_high"), reference.get(r["domain"]))],
                         x0, x1, include=[0])
    bars = []
    for i, r in enumerate(rows):
        y = top + i * row_h
        lo, hi, ref = r.get("ci_low"), r.get("ci_high"), reference.get(r["domain"])
        bars.append({"y": y + 4, "h": row_h - 8, "mid": y + row_h / 2, "label": f"{r['domain']} (n={r['n']})",
                     "w": scale(r["ppl"]) - x0, "value": r["ppl"],
                     "x_lo": None if lo is None else scale(lo), "x_hi": None if hi is None else scale(hi),
                     "x_ref": None if ref is None else scale(ref), "ref": ref,
                     "text_x": max(scale(r["ppl"]), scale(hi or 0), scale(ref or 0)) + 6,
                     "text": _fmt(r["ppl"]) + ("" if lo is None else f" [{_fmt(lo)}, {_fmt(hi)}]")
                     + ("" if ref is None else f" · seed {ref:g}")})
    n = sum(r["n"] for r in rows)
    tokens = sum(r.get("n_tokens") or 0 for r in rows)
    fig = _frame("Perplexity per domain", _caption(labels, f"n = {n} passages, {tokens} scored tokens"),
                 bottom + 48, bars=bars, x0=x0, has_ref=any(b["ref"] is not None for b in bars),
                 note="Bars: exp of the token-weighted mean NLL; whiskers: 95% BCa bootstrap over passages"
                      + ("; black ticks: the seed's GPT-2 small values" if reference else ""))
    fig["axes"] = [_x_axis(scale, bottom + 4, "perplexity (exp of mean NLL per token; 1 = certain)",
                           grid=(top, bottom))]
    return fig


_COUPLING_VARIANTS = ("seed_flattened", "row_centred")  # the seed's method first (comparable), then the default


@figure("coupling_lines", "coupling")
def coupling_lines(tables: dict, labels: dict, seed: dict) -> dict | None:
    """Coupling by layer with 95% CI whiskers beside the seed's GPT-2 curve (dashed). When the depths
    differ, both are drawn against relative depth layer / (L − 1), so that first and last layers meet."""
    table = tables["coupling"]
    variants = list(dict.fromkeys(table["variant"])) if "variant" in table.columns else [None]
    variant = next((v for v in _COUPLING_VARIANTS if v in variants), variants[0])
    rows = _records(table if variant is None else table[table["variant"] == variant].sort_values("layer"))
    seed_rows = seed.get("coupling", {}).get("rows", [])
    depth, seed_depth = max(r["layer"] for r in rows) + 1, (max(r["layer"] for r in seed_rows) + 1 if seed_rows else 0)
    relative = bool(seed_rows) and depth != seed_depth
    x0, x1, top, bottom = 70, 960, 44, 284
    xs = linear_scale([0, 1], x0, x1) if relative else Scale("linear", -0.5, max(depth, seed_depth) - 0.5, x0, x1)
    place = (lambda layer, n: layer / max(1, n - 1)) if relative else (lambda layer, n: layer)
    ys = linear_scale([v for r in rows for v in (r["coupling"], r.get("ci_low"), r.get("ci_high"))]
                      + [r["coupling"] for r in seed_rows], bottom, top, bounds=(-1, 1))
    points = [{"x": xs(place(r["layer"], depth)), "y": ys(r["coupling"]), "layer": r["layer"], "value": r["coupling"],
               "y_lo": None if r.get("ci_low") is None else ys(r["ci_low"]),
               "y_hi": None if r.get("ci_high") is None else ys(r["ci_high"])} for r in rows]
    seed_points = [{"x": xs(place(r["layer"], seed_depth)), "y": ys(r["coupling"]), "layer": r["layer"],
                    "value": r["coupling"]} for r in seed_rows]
    n = max((r.get("n_passages") or 0) for r in rows)
    by_layer = {r["layer"]: r for r in seed_rows}
    table_rows = [{**r, "depth": r["layer"] / max(1, depth - 1), "seed": by_layer.get(r["layer"], {}).get("coupling"),
                   "seed_note": by_layer.get(r["layer"], {}).get("interpretation", "")} for r in rows]
    table_rows += [{"layer": s["layer"], "coupling": None, "ci_low": None, "ci_high": None, "depth": None,
                    "seed": s["coupling"], "seed_note": s.get("interpretation", "")}
                   for s in seed_rows if s["layer"] not in {r["layer"] for r in rows}]
    fig = _frame("Coupling by layer", _caption(labels, f"variant {variant} · {depth} layers · n = {n} passages"),
                 bottom + 64, points=points, seed_points=seed_points, relative=relative, rows=table_rows,
                 line=" ".join(f"{p['x']:.1f},{p['y']:.1f}" for p in points),
                 seed_line=" ".join(f"{p['x']:.1f},{p['y']:.1f}" for p in seed_points),
                 legend_y=bottom + 56, variant=variant, model=labels.get("model", "?"), seed_depth=seed_depth,
                 note=f"Mean over passages of the mean pairwise correlation of heads' attention maps (variant {variant}); whiskers: 95% "
                      "BCa bootstrap over passages. Dashed: the seed's GPT-2 small values (single probe input)"
                      + ("; both against relative depth because the depths differ." if relative else "."))
    span = max(depth, seed_depth)
    xticks = None if relative else _band_ticks(list(range(span)), x0, (x1 - x0) / span, min_gap=24)
    fig["axes"] = [_x_axis(xs, bottom, "relative depth  layer / (L − 1)" if relative else "layer", ticks=xticks),
                   _y_axis(ys, x0, "coupling (Pearson r)", grid=(x0, x1))]
    return fig


@figure("ablation_heatmap", "ablation", "ablation_layers")
def ablation_heatmap(tables: dict, labels: dict, seed: dict) -> dict:
    """ΔPPL of every single-head ablation as a layer × head heatmap (RdBu, 0 white), and beside it each
    layer's mean ΔPPL over its heads with its 95% bootstrap CI."""
    cells, layer_rows = _records(tables["ablation"]), _records(tables["ablation_layers"])
    layers = sorted({c["layer"] for c in cells})
    heads = sorted({c["head"] for c in cells})
    top, x0 = 44, 70
    cell_h = max(8.0, min(24.0, 480 / len(layers)))
    cell_w = max(8.0, min(36.0, 420 / len(heads)))
    bottom = top + cell_h * len(layers)
    limit = max(abs(c["delta_ppl"]) for c in cells) or 1.0
    row = {layer: i for i, layer in enumerate(layers)}
    col = {head: j for j, head in enumerate(heads)}
    drawn = [{"x": x0 + col[c["head"]] * cell_w, "y": top + row[c["layer"]] * cell_h, "w": cell_w, "h": cell_h,
              "fill": diverging(c["delta_ppl"], limit),
              "title": f"layer {c['layer']} head {c['head']}: ΔPPL {_fmt(c['delta_ppl'])} (PPL {_fmt(c['ppl'])})"}
             for c in cells]
    hx0 = x0 + cell_w * len(heads)
    px0, px1 = max(hx0 + 90, 560), 960
    means = linear_scale([v for r in layer_rows for v in (r["mean_delta_ppl"], r.get("ci_low"), r.get("ci_high"))],
                         px0, px1, include=[0])
    bars = [{"y": top + row[r["layer"]] * cell_h + cell_h / 2, "x": means(r["mean_delta_ppl"]),
             "x_lo": None if r.get("ci_low") is None else means(r["ci_low"]),
             "x_hi": None if r.get("ci_high") is None else means(r["ci_high"]),
             "title": f"layer {r['layer']}: mean ΔPPL {_fmt(r['mean_delta_ppl'])}"
                      + ("" if r.get("ci_low") is None else f" [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]")
                      + f", {r['n_heads']} heads"} for r in layer_rows if r["layer"] in row]
    steps = 11
    legend = [{"x": x0 + k * (min(240, hx0 - x0) / steps), "w": min(240, hx0 - x0) / steps,
               "fill": diverging(limit * (2 * k / (steps - 1) - 1), limit)} for k in range(steps)]
    legend_w = min(240, hx0 - x0)
    n_tokens, baseline = cells[0].get("n_tokens"), cells[0].get("baseline_ppl")
    fig = _frame("Single-head ablation: ΔPPL per head and per layer",
                 _caption(labels, f"n = {n_tokens} scored tokens · baseline PPL {_fmt(baseline)} · "
                          + _proxy_agreement(cells)),
                 bottom + 96, cells=drawn, bars=bars, zero=means(0), top=top, bottom=bottom,
                 legend=legend, legend_y=bottom + 60, legend_x0=x0, legend_x1=x0 + legend_w,
                 legend_labels=[{"x": x0, "label": _fmt(-limit)}, {"x": x0 + legend_w / 2, "label": "0"},
                                {"x": x0 + legend_w, "label": _fmt(limit)}],
                 note="ΔPPL = perplexity with one head's attention output gated to 0, minus the baseline; "
                      "red: the head carries loss-reducing computation, blue: removing it helps. Right: mean over the "
                      "layer's heads, whiskers 95% BCa bootstrap over heads.")
    layer_ticks = _band_ticks(layers, top, cell_h)
    fig["axes"] = [
        {"orient": "x", "at": bottom, "start": x0, "end": hx0, "label": "head",
         "ticks": _band_ticks(heads, x0, cell_w), "grid": None},
        {"orient": "y", "at": x0, "start": top, "end": bottom, "label": "layer", "ticks": layer_ticks, "grid": None},
        _x_axis(means, bottom, "mean ΔPPL per layer (perplexity units)", grid=(top, bottom)),
    ]
    return fig


def _proxy_agreement(cells: list[dict]) -> str:
    """How far the gradient proxy |dL/d gate| ranks heads as their real ablation does: Spearman rho over every
    head and the median of the per-layer rhos. Users take the proxy for the real thing; this says when not to."""
    import numpy as np
    from scipy.stats import spearmanr

    importance = np.array([c.get("importance", np.nan) for c in cells], float)
    delta = np.array([c["delta_ppl"] for c in cells], float)
    if len(cells) < 3 or not np.isfinite(importance).all():
        return "gradient proxy: not measured"
    overall = spearmanr(importance, delta).statistic
    layers = np.array([c["layer"] for c in cells])
    per_layer = [spearmanr(importance[layers == k], delta[layers == k]).statistic for k in np.unique(layers)
                 if (layers == k).sum() >= 3]
    per_layer = [r for r in per_layer if np.isfinite(r)]
    median = f", per-layer median {_fmt(float(np.median(per_layer)))}" if per_layer else ""
    return f"Spearman rho(|dL/d gate|, ΔPPL) {_fmt(float(overall))} over {len(cells)} heads{median}"


def _block_order(blocks: list[str]) -> list[str]:
    """model first, then layer.{i}.* by layer number."""
    def key(block):
        m = re.match(r"layer\.(\d+)\.(.*)", block)
        return (0, 0, block) if m is None else (1, int(m[1]), m[2])
    return sorted(blocks, key=key)


@figure("hessian_spectrum", "hessian")
def hessian_spectrum(tables: dict, labels: dict, seed: dict) -> dict | None:
    """Per block: the top and bottom Lanczos eigenvalues (filled when converged), and where density rows
    exist the SLQ density as a block × eigenvalue heatmap (node weights summed per bin), on one asinh axis."""
    rows = _records(tables["hessian"])
    backends = list(dict.fromkeys(r["backend"] for r in rows if r["kind"] == "eigenvalue"))
    backend = "atlas" if "atlas" in backends else (backends[0] if backends else "atlas")
    eig = [r for r in rows if r["kind"] == "eigenvalue" and r["backend"] == backend]
    density = [r for r in rows if r["kind"] == "density" and r.get("weight") is not None]
    if not eig and not density:
        return None
    blocks = _block_order(list(dict.fromkeys(r["block"] for r in eig + density)))
    row_h = max(11.0, min(22.0, 520 / len(blocks)))  # at least a label's height: every block is named
    top, x0, x1 = 44, 190, 960
    scale = asinh_scale([r["value"] for r in eig + density], x0, x1)
    index = {b: i for i, b in enumerate(blocks)}
    bottom_a = top + row_h * len(blocks)
    points = [{"x": scale(r["value"]), "y": top + index[r["block"]] * row_h + row_h / 2,
               "colour": _POS_HEX if r["index"] >= 0 else _NEG_HEX, "filled": bool(r["converged"]),
               "title": f"{r['block']}: eigenvalue {r['index']} = {_fmt(r['value'])}"
                        f"{'' if r['converged'] else ' (not converged)'}"} for r in eig]
    fig = _frame("Hessian spectrum per parameter block",
                 _caption(labels, f"n = {rows[0].get('n_tokens')} tokens · backend {backend} · "
                                   f"{len(blocks)} block{'s' if len(blocks) > 1 else ''}"),
                 bottom_a + 50, points=points, top=top, bottom_a=bottom_a, density=None,
                 note="Eigenvalues of the Hessian of the token-weighted mean NLL (nats) with respect to the block's "
                      "parameters. Red: top-k (index 0, 1, ...), blue: bottom-k; hollow: the Lanczos residual bound "
                      "is above tol·|λ|.")
    axes = [_x_axis(scale, bottom_a, "eigenvalue λ of ∇²L", grid=(top, bottom_a)),
            {"orient": "y", "at": x0, "start": top, "end": bottom_a, "label": "",
             "ticks": _band_ticks(blocks, top, row_h, min_gap=11), "grid": None}]
    if density:
        d_blocks = [b for b in blocks if any(r["block"] == b for r in density)]
        d_top = bottom_a + 70
        d_bottom = d_top + row_h * len(d_blocks)
        n_bins = 60
        t0, t1 = scale.transform(scale.lo), scale.transform(scale.hi)
        mass: dict[tuple[int, int], float] = {}
        for r in density:
            t = scale.transform(min(max(r["value"], scale.lo), scale.hi))
            k = min(n_bins - 1, int((t - t0) / (t1 - t0) * n_bins))
            key = (d_blocks.index(r["block"]), k)
            mass[key] = mass.get(key, 0.0) + r["weight"]
        logs = {key: math.log10(m) for key, m in mass.items() if m > 0}
        low, high = (min(logs.values()), max(logs.values())) if logs else (0.0, 1.0)
        bin_w = (x1 - x0) / n_bins
        cells = [{"x": x0 + k * bin_w, "y": d_top + i * row_h, "w": bin_w, "h": row_h, "block": d_blocks[i],
                  "weight": mass[(i, k)],
                  "fill": sequential((lv - low) / (high - low) if high > low else 1.0),
                  "title": f"{d_blocks[i]}: weight {_fmt(10 ** lv)} near λ = "
                           f"{_fmt(scale.inverse(t0 + (k + 0.5) / n_bins * (t1 - t0)))}"}
                 for (i, k), lv in sorted(logs.items())]
        fig["density"] = {"cells": cells, "top": d_top, "bottom": d_bottom,
                          "title": f"SLQ spectral density: node weight per bin (log colour, 10^{low:.1f} to "
                                   f"10^{high:.1f}); {len(density)} nodes"}
        fig["height"] = round(d_bottom + 50)
        axes += [_x_axis(scale, d_bottom, "eigenvalue λ of ∇²L"),
                 {"orient": "y", "at": x0, "start": d_top, "end": d_bottom, "label": "",
                  "ticks": _band_ticks(d_blocks, d_top, row_h, min_gap=11), "grid": None}]
    fig["axes"] = axes
    return fig


@figure("gradient_bars", "gradient")
def gradient_bars(tables: dict, labels: dict, seed: dict) -> dict:
    """Per domain, side by side: the gradient norm ‖∇θ L‖₂ and the mean next-token entropy (nats)."""
    rows = _records(tables["gradient"])
    top, row_h, label_x = 44, 24, 250
    bottom = top + row_h * len(rows)
    panels = []
    for (column, label), (a, b) in zip((("grad_norm", "gradient norm ‖∇θ L‖₂ (L: mean NLL, nats)"),
                                        ("entropy", "mean next-token entropy (nats)")),
                                       ((label_x, 580), (630, 960)), strict=True):
        scale = linear_scale([r[column] for r in rows], a, b, include=[0])
        panels.append({"x0": a, "bars": [{"y": top + i * row_h + 4, "h": row_h - 8, "w": scale(r[column]) - a,
                                          "title": f"{r['domain']}: {column} {_fmt(r[column])}"}
                                         for i, r in enumerate(rows)],
                       "axis": _x_axis(scale, bottom + 4, label, grid=(top, bottom))})
    tokens = sum(r["n_tokens"] for r in rows)
    passages = sum(r["n_passages"] for r in rows)
    fig = _frame("Gradient norm and output entropy per domain",
                 _caption(labels, f"n = {passages} passages, {tokens} scored tokens"), bottom + 48,
                 panels=panels, label_x=label_x - 6,
                 labels=[{"y": top + i * row_h + row_h / 2, "text": f"{r['domain']} (n={r['n_passages']})"}
                         for i, r in enumerate(rows)],
                 note="One pooled batch per domain (its leading passages up to the token budget): no CI.")
    fig["axes"] = [p["axis"] for p in panels]
    return fig


@figure("interpolation_curve", "interpolation", "interpolation_barrier")
def interpolation_curve(tables: dict, labels: dict, seed: dict) -> dict:
    """Loss along the straight line from model A (t = 0) to B (t = 1), the chord between the endpoints
    dashed, and each barrier definition marked where its maximum lies."""
    points = sorted(_records(tables["interpolation"]), key=lambda r: r["t"])
    barriers = _records(tables["interpolation_barrier"])
    x0, x1, top, bottom = 90, 960, 44, 284
    xs = Scale("linear", 0.0, 1.0, x0, x1)
    ys = linear_scale([v for r in points for v in (r["loss"], r["linear"])], bottom, top)
    loss_at = lambda t: min(points, key=lambda r: abs(r["t"] - t))  # noqa: E731  (t_at_max is a grid point)
    mean_ends = (points[0]["loss"] + points[-1]["loss"]) / 2
    marks = []
    for b in barriers:
        at = loss_at(b["t_at_max"])
        ref = at["linear"] if b["definition"] == "max_minus_linear" else mean_ends
        marks.append({"x": xs(b["t_at_max"]), "y_ref": ys(ref), "y_max": ys(at["loss"]),
                      "label_x": min(xs(b["t_at_max"]) + 8, x1 - 300), "label_y": top + 14 + 14 * len(marks),
                      "dashed": b["definition"] != "max_minus_linear",
                      "label": f"{'max − chord' if b['definition'] == 'max_minus_linear' else 'max − mean of ends'}: "
                               f"{_fmt(b['barrier'])} nats at t = {_fmt(b['t_at_max'])}"})
    other = (labels.get("settings") or {}).get("other", "?")
    fig = _frame("Linear interpolation between two models",
                 f"A = {labels.get('model', '?')} (t = 0) · B = {other} (t = 1) · {labels.get('corpus', '?')} · "
                 f"n = {points[0]['n_tokens']} scored tokens at each t · run {str(labels.get('run', ''))[:8]}",
                 bottom + 50, marks=marks, y_ref_mean=ys(mean_ends),
                 line=" ".join(f"{xs(r['t']):.1f},{ys(r['loss']):.1f}" for r in points),
                 chord=" ".join(f"{xs(r['t']):.1f},{ys(r['linear']):.1f}" for r in points),
                 points=[{"x": xs(r["t"]), "y": ys(r["loss"]), "title": f"t = {_fmt(r['t'])}: loss {_fmt(r['loss'])}"}
                         for r in points],
                 note="Solid: L(t) on θ(t) = (1 − t)·θ_A + t·θ_B; dashed: the chord (1 − t)·L(0) + t·L(1). "
                      "Barriers: the loss above the chord, and above the mean of the endpoints, at their maxima "
                      "(one pooled batch: no CI).")
    fig["axes"] = [_x_axis(xs, bottom, "t (0 = A, 1 = B)"),
                   _y_axis(ys, x0, "loss (mean NLL, nats/token)", grid=(x0, x1))]
    return fig
