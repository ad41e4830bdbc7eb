"""The verdict figures: the forest plot of a run's verdicts and a prediction's history."""

from __future__ import annotations

import re

from .._verdict import SCALES
from ._base import (OUTCOME_COLOURS, WIDTH, Scale, _band_ticks, _finite, _fmt, _frame, _x_axis, _y_axis,
                    asinh_scale, linear_scale, log_scale)


def statistic_kind(criterion: dict) -> str:
    """The old text heuristic, only for criteria stored before criteria declared their ``scale``:
    ``correlation`` (Spearman/Pearson/Kendall, on [−1, 1]), ``ratio`` (a quotient, log scale: its statistic has
    a spaced " / " and no difference in it) or ``difference`` (everything else)."""
    statistic = str(criterion.get("statistic", ""))
    if re.search(r"\b(rho|spearman|pearson|kendall|tau|correlation)\b", statistic, re.I):
        return "correlation"
    if " / " in statistic and not re.search(r"\bminus\b| - ", statistic):
        return "ratio"
    return "difference"


def scale_kind(criterion: dict) -> str:
    """The kind of number a verdict's statistic is, which picks its axis: the ``scale`` its criterion declares
    (one of ``atlas._verdict.SCALES``); for a criterion stored before criteria declared one, the old text
    heuristic (``statistic_kind``)."""
    declared = criterion.get("scale")
    return declared if declared in SCALES else statistic_kind(criterion)


_KINDS = {  # group title in the forest plot, axis label in a history panel; the forest plot's groups, in order
    "correlation": ("Correlations (ρ)", "correlation ρ"),
    "share": ("Shares", "share"),
    "ratio": ("Ratios", "ratio"),
    "log_ratio": ("Logs of ratios", "log ratio"),
    "difference": ("Differences, each in its statistic's own unit", "difference"),
}
assert set(_KINDS) == set(SCALES), "a scale a criterion can declare has no axis"


def _value_scale(kind: str, values: list[float], a: float, b: float, thresholds: list[float]) -> Scale:
    """The axis of a scale kind (``atlas._verdict.SCALES``): correlations on [−1, 1]; shares on [0, 1], linear,
    widened below 0 as far as a value lies there but not below −1; ratios on a log scale (linear if a value is
    not positive); logs of ratios linear and centred on 0; differences on an asinh scale centred on 0."""
    values = _finite(values)
    if kind == "correlation":
        return Scale("linear", -1.0, 1.0, a, b)
    if kind == "share":
        return linear_scale(values, a, b, include=[0.0, 1.0, *thresholds], bounds=(-1.0, 1.0))
    if kind == "ratio" and all(v > 0 for v in values + thresholds):
        return log_scale(values, a, b, include=thresholds)
    if kind == "ratio":
        return linear_scale(values, a, b, include=thresholds)
    if kind == "log_ratio":
        both = [*values, *thresholds]
        return linear_scale(both + [-v for v in both], a, b, include=[0.0])
    return asinh_scale(values, a, b, include=thresholds, symmetric=True)


def claimed_side(scale: Scale, threshold: float, direction: str) -> tuple[float, float] | None:
    """The pixels from the threshold to the end of the axis on the side the criterion claims (``>``, ``>=``:
    larger values; ``<``, ``<=``: smaller; see ``atlas._verdict._SIDES``), as (start, end) with start <= end;
    None for a direction it does not know."""
    if direction in (">", ">="):
        end = scale.b
    elif direction in ("<", "<="):
        end = scale.a
    else:
        return None
    at = scale(threshold)
    return min(at, end), max(at, end)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _wrapped(text: str, n: int) -> list[str]:
    """``text`` in lines of at most ``n`` characters, broken after " vs " or a space where it can be, never cut."""
    lines = []
    while len(text) > n:
        vs, space = text.rfind(" vs ", 0, n - 3), text.rfind(" ", 0, n + 1)
        cut = vs + 4 if vs > 0 else space + 1 if space > 0 else n
        lines.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    return [*lines, text]


def _second_lines(v: dict, n: int) -> list[str]:
    """A forest row's lines below the prediction: outcome · model · corpus · profile on one line when it fits in
    ``n`` characters; otherwise the model on lines of its own, below the rest, so that no model name is cut."""
    outcome, corpus, profile = v["outcome"].replace("_", " "), v["corpus"] or "—", v["profile"] or "—"
    line = " · ".join(str(x) for x in (outcome, v["model"], corpus, profile))
    if len(line) <= n:
        return [line]
    return [_short(" · ".join((outcome, corpus, profile)), n), *_wrapped(str(v["model"]), n)]


def _interval_text(effect, lo, hi, n) -> str:
    if effect is None:
        return "no estimate"
    ci = "(no CI)" if lo is None or hi is None else f"[{_fmt(lo)}, {_fmt(hi)}]"
    return f"{_fmt(effect)} {ci}" + ("" if n is None else f", n = {n}")


#: the forest plot's legend, in order: (kind the template draws, label)
_LEGEND = ([("outcome", o) for o in OUTCOME_COLOURS if o != "not_run"]
           + [("effect", "effect"), ("ci", "95% CI"), ("threshold", "threshold"), ("claim", "claimed side")])
CLAIM_FILL = "#2e7d32"  # the claimed side's band, at low opacity: the side a supporting CI lies on
_CHAR = 5.7  # about the width of a character of the figures' 11px text, in pixels (system-ui)


def _legend(x: float) -> list[dict]:
    out = []
    for kind, label in _LEGEND:
        text = label.replace("_", " ")
        out.append({"kind": kind, "label": text, "x": x, "colour": OUTCOME_COLOURS.get(label, "#222")})
        x += 26 + len(text) * _CHAR
    return out


def forest(verdicts: list[dict]) -> dict | None:
    """One row per verdict that was reached (not ``not_run``), grouped by the scale its criterion declares
    (``scale_kind``), each group on its own axis. ``verdicts``: dicts with prediction, model, corpus, profile,
    outcome, effect, ci_low, ci_high, n, criterion and href. Rows: effect dot and CI bar in the outcome's colour,
    threshold line, the claimed side of the threshold shaded, values; a model name too long for the label column
    goes on lines of its own, and its row is that much taller."""
    reached = [v for v in verdicts if v["outcome"] != "not_run"]
    if not reached:
        return None
    label_w, x0, x1 = 8, 350, 760
    chars = int((x0 - label_w - 12) / _CHAR)  # what the label column holds of a row's second line
    row_h = 32 if len(reached) <= 10 else 26  # many verdicts: tighter rows, so that the overview fits a screen
    y = 66.0
    groups = []
    for kind, (title, _) in _KINDS.items():
        rows = [v for v in reached if scale_kind(v["criterion"]) == kind]
        if not rows:
            continue
        values = [x for v in rows for x in (v["effect"], v["ci_low"], v["ci_high"])]
        thresholds = _finite(v["criterion"].get("threshold") for v in rows)
        scale = _value_scale(kind, values, x0, x1, thresholds)
        top = row_top = y + 20
        drawn = []
        for v in rows:
            lines = _second_lines(v, chars)
            height = row_h + 12 * (len(lines) - 1)
            mid = row_top + row_h / 2
            effect, lo, hi = (None if x is None else float(x) for x in (v["effect"], v["ci_low"], v["ci_high"]))
            criterion = v["criterion"]
            threshold = float(criterion.get("threshold", 0.0))
            claim = claimed_side(scale, threshold, str(criterion.get("direction", "")))
            drawn.append({
                "y": mid, "top": row_top + 3, "bottom": row_top + height - 3,
                "prediction": _short(v["prediction"], 44), "lines": lines, "href": v.get("href"),
                "outcome": v["outcome"], "colour": OUTCOME_COLOURS.get(v["outcome"], "#555"),
                "x_effect": None if effect is None else scale(effect),
                "x_lo": None if lo is None or hi is None else scale(lo),
                "x_hi": None if lo is None or hi is None else scale(hi),
                "clipped": any(x is not None and scale.clipped(x) for x in (effect, lo, hi)),
                "x_threshold": scale(threshold), "value": _interval_text(effect, lo, hi, v.get("n")),
                "claim": None if claim is None else {"x": claim[0], "w": claim[1] - claim[0]},
                "title": (f"{v['prediction']} on {v['model']}, {v['corpus'] or '—'}, {v['profile'] or '—'}: "
                          f"{v['outcome'].replace('_', ' ')}; {criterion.get('statistic', '')} "
                          f"{criterion.get('direction', '')} {_fmt(threshold)}; "
                          f"{_interval_text(effect, lo, hi, v.get('n'))}"),
            })
            row_top += height
        bottom = row_top
        groups.append({"kind": kind, "title": f"{title}: {scale.note}", "y": y + 12, "rows": drawn,
                       "axis": _x_axis(scale, bottom + 4, "", grid=(top, bottom))})
        y = bottom + 46
    fig = _frame("Verdicts: effect and 95% CI against the criterion's threshold",
                 f"{len(reached)} verdicts reached; one axis per scale the criteria declare; shaded: the side of "
                 "each threshold the criterion claims", y, groups=groups, label_x=label_w, x0=x0, x1=x1,
                 value_x=x1 + 12, legend=_legend(label_w), legend_y=50, claim_fill=CLAIM_FILL)
    for g in groups:
        fig["axes"].append(g["axis"])
    return fig


def history(verdicts: list[dict]) -> list[dict]:
    """A prediction's stored verdicts over time, one panel per (model, corpus, profile), oldest first:
    effect dot and CI whisker in the outcome's colour, the threshold of each verdict's version as a step
    line with the side it claims shaded, a dotted line where the version (the criterion) changed; the axis is
    the one of the latest verdict's scale (``scale_kind``). ``verdicts``: dicts as for ``forest`` plus
    created_at (datetime) and version, in the order written."""
    panels: dict[tuple, list[dict]] = {}
    for v in verdicts:
        panels.setdefault((v["model"], v["corpus"] or "—", v["profile"] or "—"), []).append(v)
    out = []
    for (model, corpus, profile), rows in panels.items():
        kind = scale_kind(rows[-1]["criterion"])
        x0, x1, y_top, y_bottom = 90, WIDTH - 30, 48, 238
        values = [x for v in rows for x in (v["effect"], v["ci_low"], v["ci_high"])]
        thresholds = _finite(v["criterion"].get("threshold") for v in rows)
        scale = _value_scale(kind, values, y_bottom, y_top, thresholds)
        step = (x1 - x0) / len(rows)
        points, steps, changes, claims = [], [], [], []
        for i, v in enumerate(rows):
            cx = x0 + (i + 0.5) * step
            effect, lo, hi = (None if x is None else float(x) for x in (v["effect"], v["ci_low"], v["ci_high"]))
            threshold = float(v["criterion"].get("threshold", 0.0))
            y_threshold = scale(threshold)
            steps.append(f"{x0 + i * step:.1f},{y_threshold:.1f} {x0 + (i + 1) * step:.1f},{y_threshold:.1f}")
            claim = claimed_side(scale, threshold, str(v["criterion"].get("direction", "")))
            if claim is not None:
                claims.append({"x": x0 + i * step, "w": step, "y": claim[0], "h": claim[1] - claim[0]})
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
                     y_bottom + 44, points=points, threshold=" ".join(steps), changes=changes, claims=claims,
                     claim_fill=CLAIM_FILL,
                     y_top=y_top, y_bottom=y_bottom)
        fig["axes"] = [_y_axis(scale, x0, _KINDS[kind][1], grid=(x0, x1)),
                       {"orient": "x", "at": y_bottom, "start": x0, "end": x1, "label": "verdicts in the order stored",
                        "ticks": _band_ticks(dates, x0, step, min_gap=80), "grid": None}]
        out.append(fig)
    return out
