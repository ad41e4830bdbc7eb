"""The verdict figures: the forest plot of a run's verdicts and a prediction's history."""

from __future__ import annotations

import re

from ._base import (OUTCOME_COLOURS, WIDTH, Scale, _band_ticks, _finite, _fmt, _frame, _x_axis, _y_axis,
                    asinh_scale, linear_scale, log_scale)



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
