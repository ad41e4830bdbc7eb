"""The curvature and multi-task geometry instruments' figures: smoothness, tightness, elasticity, stiffness and
the Hessian coupling between heads.

They share one vocabulary of marks, drawn by the ``_curv_marks`` macro of ``templates/_figures.html.j2``:
``cells`` (heatmap rectangles), ``dots`` (a point with optional 95% CI whiskers along x or y; ``open_lo`` /
``open_hi`` leave an end uncapped where the interval is unbounded or runs beyond the axis), ``lines``,
``paths`` (polylines), ``texts`` and colour ``legends``. Shares (cosines, recovered shares, MGDA ratios) are
drawn on linear axes with their natural ends (−1, 0, 1) always shown; ratios that span decades (the gradient
noise scale, the Hessian coupling) on log axes; signed quantities coloured with RdBu around 0.
"""

from __future__ import annotations

import math
import re

from ._base import (_NEG_HEX, _POS_HEX, Scale, _band_ticks, _caption, _fmt, _frame, _records, _x_axis,
                    _y_axis, diverging, figure, linear_scale, log_scale, sequential)

_BLUE, _GREY, _ORANGE = "#2a6cb0", "#9a9a9a", "#d95f02"


# --- marks ---------------------------------------------------------------------------------------------


def _num(v) -> float | None:
    """A finite float, or None for a missing / NaN / infinite value."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _ends(scale: Scale, lo, hi, *, unbounded_hi: bool = False) -> dict:
    """A CI's pixel ends on ``scale``: ``{lo, hi, open_lo, open_hi}`` (ends beyond the axis, or unbounded, are
    drawn to the axis end and left uncapped); lo and hi None when the CI is missing."""
    lo, hi = _num(lo), _num(hi)
    if lo is None or (hi is None and not unbounded_hi):
        return {"lo": None, "hi": None, "open_lo": False, "open_hi": False}
    top = scale.hi if hi is None else hi
    return {"lo": scale(lo), "hi": scale(top), "open_lo": scale.clipped(lo),
            "open_hi": hi is None or scale.clipped(hi)}


def _dot(x: float, y: float, colour: str, title: str, *, filled: bool = True, r: float = 3.5, xci: dict | None = None,
         yci: dict | None = None, clipped: bool = False) -> dict:
    xci = xci or {"lo": None, "hi": None, "open_lo": False, "open_hi": False}
    yci = yci or {"lo": None, "hi": None, "open_lo": False, "open_hi": False}
    return {"x": x, "y": y, "r": r, "stroke": colour, "fill": colour if filled else "#fff", "title": title,
            "x_lo": xci["lo"], "x_hi": xci["hi"], "y_lo": yci["lo"], "y_hi": yci["hi"],
            "open_lo": xci["open_lo"] or yci["open_lo"], "open_hi": xci["open_hi"] or yci["open_hi"],
            "clipped": clipped}


def _text(x: float, y: float, text: str, *, anchor: str = "start", cls: str = "tick", fill: str | None = None,
          rotate: float | None = None, bold: bool = False) -> dict:
    return {"x": x, "y": y, "text": text, "anchor": anchor, "cls": cls, "fill": fill, "rotate": rotate, "bold": bold}


def _line(x1: float, y1: float, x2: float, y2: float, *, stroke: str = "#555", width: float = 1.0,
          dash: str | None = None) -> dict:
    return {"x1": x1, "y1": y1, "x2": x2, "y2": y2, "stroke": stroke, "width": width, "dash": dash}


def _legend(x0: float, y: float, lo: float, hi: float, colour, title: str, *, width: float = 240,
            steps: int = 11) -> dict:
    """A colour bar from ``lo`` to ``hi`` (``colour(v)`` gives the fill), labelled at both ends and the middle."""
    step = width / steps
    return {"x0": x0, "x1": x0 + width, "y": y, "title": title,
            "steps": [{"x": x0 + k * step, "w": step, "fill": colour(lo + (hi - lo) * (k + 0.5) / steps)}
                      for k in range(steps)],
            "labels": [{"x": x0, "label": _fmt(lo)}, {"x": x0 + width / 2, "label": _fmt((lo + hi) / 2)},
                       {"x": x0 + width, "label": _fmt(hi)}]}


def _cosine_colour(v: float) -> str:
    return diverging(v, 1.0)


def _ci_text(v, lo, hi) -> str:
    v, lo, hi = _num(v), _num(lo), _num(hi)
    if v is None:
        return "undefined"
    if lo is None:
        return _fmt(v)
    return f"{_fmt(v)} [{_fmt(lo)}, {'∞' if hi is None else _fmt(hi)}]"


def _matrix(values: dict[tuple[int, int], float], n: int, x0: float, y0: float, cell: float, colour,
            title) -> list[dict]:
    """The cells of an n × n matrix at (x0, y0), row i column j, from ``values`` (missing: not drawn)."""
    return [{"x": x0 + j * cell, "y": y0 + i * cell, "w": cell, "h": cell, "fill": colour(v), "title": title(i, j, v)}
            for (i, j), v in sorted(values.items())]


def _small_multiples(count: int, size: float, x0: float = 70, x1: float = 960, gap: float = 22) -> tuple[int, float]:
    """How many ``size``-pixel panels fit in a row between x0 and x1, and the pitch between them."""
    per_row = max(1, int((x1 - x0 + gap) // (size + gap)))
    return min(per_row, count), size + gap


def _blocks(blocks) -> list[str]:
    """``model`` first, then ``layer.{i}`` by layer number, then any other block by name."""
    def key(block):
        m = re.fullmatch(r"layer\.(\d+)", block)
        return (0, 0, "") if block == "model" else (1, int(m[1]), "") if m else (2, 0, block)
    return sorted(dict.fromkeys(blocks), key=key)


def _layer_blocks(blocks) -> list[str]:
    return [b for b in _blocks(blocks) if re.fullmatch(r"layer\.\d+", b)]


def _fit(text: str, pixels: float) -> str:
    """``text`` cut with an ellipsis to about ``pixels`` wide at the tick font (about 6.5 pixels a character)."""
    most = max(4, int(pixels / 6.5))
    return text if len(text) <= most else text[: most - 1] + "…"


# --- smoothness ------------------------------------------------------------------------------------------


@figure("smoothness_domains", "smoothness", "smoothness_gram")
def smoothness_domains(tables: dict, labels: dict, seed: dict) -> dict | None:
    """Per domain (block ``model``): the mean cosine between passages' gradients and the gradient noise scale
    B_simple, each with its 95% CI; the mean cosine per decoder layer as a domain × layer heatmap; and each
    domain's passage × passage gradient cosines (from the Gram matrix) as small multiples."""
    rows = [r for r in _records(tables["smoothness"]) if r["block"] == "model"]
    rows = [r for r in rows if _num(r.get("mean_cosine")) is not None or _num(r.get("b_simple")) is not None]
    if not rows:
        return None
    top, row_h, label_x = 64, 24, 244
    bottom = top + row_h * len(rows)
    cos = linear_scale([v for r in rows for v in (r["mean_cosine"], r.get("cosine_ci_low"), r.get("cosine_ci_high"))],
                       250, 580, include=[0], bounds=(-1, 1))
    noise = log_scale([v for r in rows for v in (r.get("b_simple"), r.get("b_simple_ci_low"),
                                                 r.get("b_simple_ci_high"))], 640, 960)
    dots, texts, lines, cells = [], [], [], []
    texts += [_text(250, top - 10, "mean cosine of passages' gradients (model)", cls="label", bold=True),
              _text(640, top - 10, "gradient noise scale B_simple (model)", cls="label", bold=True),
              _text(label_x, top - 10, "domain", anchor="end", cls="label", bold=True)]
    lines.append(_line(cos(0), top, cos(0), bottom, stroke="#777"))
    for i, r in enumerate(rows):
        y = top + (i + 0.5) * row_h
        texts.append(_text(label_x, y + 4, f"{r['domain']} (n={r['n_passages']})", anchor="end", cls="row"))
        c = _num(r.get("mean_cosine"))
        if c is not None:
            dots.append(_dot(cos(c), y, _BLUE, f"{r['domain']}: mean cosine "
                             + _ci_text(c, r.get("cosine_ci_low"), r.get("cosine_ci_high")),
                             xci=_ends(cos, r.get("cosine_ci_low"), r.get("cosine_ci_high"))))
        b = _num(r.get("b_simple"))
        if b is None:
            texts.append(_text(646, y + 4, "undefined: signal ≤ 0 (noise swamps the common direction)", fill="#666"))
        else:
            ci = _ci_text(b, r.get("b_simple_ci_low"), r.get("b_simple_ci_high"))
            dots.append(_dot(noise(b), y, _POS_HEX, f"{r['domain']}: B_simple {ci} passages "
                             f"(signal {_fmt(r['signal'])}, noise {_fmt(r['noise'])})",
                             xci=_ends(noise, r.get("b_simple_ci_low"), r.get("b_simple_ci_high"),
                                       unbounded_hi=_num(r.get("b_simple_ci_low")) is not None)))
    axes = [_x_axis(cos, bottom, "mean cos(g_i, g_j) over distinct passages (1 smooth, < 0 conflicting)",
                    grid=(top, bottom)),
            _x_axis(noise, bottom, "B_simple = tr(Σ) / |G|² (passages; log scale)", grid=(top, bottom))]
    y = bottom + 60
    domains = [r["domain"] for r in rows]

    by_layer = {(r["domain"], r["block"]): _num(r.get("mean_cosine")) for r in _records(tables["smoothness"])}
    layers = _layer_blocks({b for _, b in by_layer})
    if layers:
        texts.append(_text(8, y, "Mean cosine between passages' gradients per decoder layer", cls="label", bold=True))
        h_top = y + 10
        cell_w = max(6.0, min(40.0, 700 / len(layers)))
        for i, d in enumerate(domains):
            texts.append(_text(label_x, h_top + (i + 0.5) * 18 + 4, d, anchor="end", cls="row"))
            for j, block in enumerate(layers):
                v = by_layer.get((d, block))
                if v is not None:
                    cells.append({"x": 250 + j * cell_w, "y": h_top + i * 18, "w": cell_w, "h": 18,
                                  "fill": _cosine_colour(v), "title": f"{d}, {block}: mean cosine {_fmt(v)}"})
        h_bottom = h_top + 18 * len(domains)
        layer_numbers = [int(b.split(".")[1]) for b in layers]
        axes.append({"orient": "x", "at": h_bottom, "start": 250, "end": 250 + cell_w * len(layers),
                     "label": "decoder layer", "ticks": _band_ticks(layer_numbers, 250, cell_w, min_gap=18),
                     "grid": None})
        y = h_bottom + 60

    gram = _records(tables["smoothness_gram"])
    panels = []
    for d in domains:
        pairs = [g for g in gram if g["domain"] == d and g["block"] == "model" and _num(g.get("dot")) is not None]
        passages = list(dict.fromkeys(p for g in pairs for p in (g["passage_a"], g["passage_b"])))
        sq = {g["passage_a"]: g["dot"] for g in pairs if g["passage_a"] == g["passage_b"]}
        values = {}
        index = {p: k for k, p in enumerate(passages)}
        for g in pairs:
            a, b = g["passage_a"], g["passage_b"]
            if a != b and sq.get(a, 0) > 0 and sq.get(b, 0) > 0:
                c = max(-1.0, min(1.0, g["dot"] / math.sqrt(sq[a] * sq[b])))
                values[(index[a], index[b])] = values[(index[b], index[a])] = c
        if values:
            panels.append((d, passages, values))
    if panels:
        texts.append(_text(8, y, "Cosine between the gradients of every pair of a domain's passages "
                                 "(block model; rows and columns: passages in corpus order)", cls="label", bold=True))
        n_max = max(len(p) for _, p, _ in panels)
        size = max(80.0, min(130.0, 6.0 * n_max))
        per_row, pitch = _small_multiples(len(panels), size, x0=20, gap=36)
        g_top = y + 26
        for k, (d, passages, values) in enumerate(panels):
            gx, gy = 20 + (k % per_row) * pitch, g_top + (k // per_row) * (size + 34)
            cell = size / len(passages)
            texts.append(_text(gx, gy - 5, _fit(d, pitch - 8), cls="tick"))
            cells += _matrix(values, len(passages), gx, gy, cell, _cosine_colour,
                             lambda i, j, v, d=d, p=passages: f"{d}: cos(g[{p[i]}], g[{p[j]}]) = {_fmt(v)}")
            lines.append(_line(gx, gy, gx + size, gy + size, stroke="#ccc"))  # the diagonal: a passage with itself
        y = g_top + math.ceil(len(panels) / per_row) * (size + 34)
    legends = []
    if layers or panels:
        legends.append(_legend(250 if not panels else 20, y + 4, -1.0, 1.0, _cosine_colour,
                               "cosine of two gradients (blue: conflicting, white: unrelated, red: aligned)"))
        y += 44
    n = sum(r["n_passages"] for r in rows)
    fig = _frame("Smoothness: agreement and noise of one domain's passage gradients",
                 _caption(labels, f"n = {n} passages in {len(rows)} domain{'s' if len(rows) != 1 else ''}"),
                 y + 6, cells=cells, dots=dots, lines=lines, paths=[], texts=texts, legends=legends,
                 note="g_i: gradient of passage i's mean NLL per token. Mean cosine over distinct passage pairs, and "
                      "B_simple = tr(Σ) / |G|², the simple gradient noise scale (McCandlish et al. 2018; large: "
                      "abrasive), both per domain with 95% BCa bootstrap CIs over passages; an uncapped whisker runs "
                      "on unbounded (no positive signal at that end of the CI).")
    fig["axes"] = axes
    return fig


# --- tightness -------------------------------------------------------------------------------------------


@figure("tightness_blocks", "tightness", "tightness_mgda", "tightness_pairs")
def tightness_blocks(tables: dict, labels: dict, seed: dict) -> dict | None:
    """Per block: the mean and least cosine between domains' gradients, the share of conflicting pairs and the
    MGDA min-norm ratio; below, the domain × domain cosines (block model) and the MGDA weights per block."""
    rows = {r["block"]: r for r in _records(tables["tightness"]) if _num(r.get("mean_cosine")) is not None}
    if not rows:
        return None
    blocks = _blocks(rows)
    top, row_h, label_x = 64, max(14.0, min(22.0, 520 / len(blocks))), 150
    bottom = top + row_h * len(blocks)
    cos = linear_scale([v for r in rows.values() for v in (r["mean_cosine"], r.get("min_cosine"))], 160, 520,
                       include=[0], bounds=(-1, 1))
    share = Scale("linear", 0.0, 1.0, 580, 750)
    ratio = Scale("linear", 0.0, 1.0, 800, 960)
    texts = [_text(160, top - 10, "cosine between domains' gradients", cls="label", bold=True),
             _text(580, top - 10, "conflicting pairs", cls="label", bold=True),
             _text(800, top - 10, "MGDA min-norm ratio", cls="label", bold=True)]
    dots, lines, cells = [], [_line(cos(0), top, cos(0), bottom, stroke="#777")], []
    for i, block in enumerate(blocks):
        r, y = rows[block], top + (i + 0.5) * row_h
        texts.append(_text(label_x, y + 4, block, anchor="end", cls="row"))
        lo = _num(r.get("min_cosine"))
        if lo is not None:
            lines.append(_line(cos(lo), y, cos(r["mean_cosine"]), y, stroke=_BLUE, width=1.5))
            dots.append(_dot(cos(lo), y, _BLUE, f"{block}: least cosine {_fmt(lo)} (the most conflicting pair)",
                             filled=False))
        dots.append(_dot(cos(r["mean_cosine"]), y, _BLUE, f"{block}: mean cosine {_fmt(r['mean_cosine'])} over "
                         f"{r['n_domains']} domains"))
        s = _num(r.get("conflict_share"))
        if s is not None:
            n_pairs = r["n_domains"] * (r["n_domains"] - 1) // 2
            texts.append(_text(share(s) + 4, y + 4, f"{round(s * n_pairs)} of {n_pairs}", fill="#555"))
            cells.append({"x": 580, "y": y - row_h / 2 + 3, "w": share(s) - 580, "h": row_h - 6, "fill": _NEG_HEX,
                          "title": f"{block}: {_fmt(s)} of the domain pairs conflict (cosine < 0)"})
        m = _num(r.get("mgda_norm_ratio"))
        if m is None:
            texts.append(_text(806, y + 4, "undefined (mean gradient 0)", fill="#666"))
        else:
            cells.append({"x": 800, "y": y - row_h / 2 + 3, "w": ratio(m) - 800, "h": row_h - 6, "fill": "#7aa6d6",
                          "title": f"{block}: |min-norm point| / |mean gradient| = {_fmt(m)}"})
    axes = [_x_axis(cos, bottom, "cosine (dot: mean, ring: least pair)", grid=(top, bottom)),
            _x_axis(share, bottom, "share with cosine < 0", grid=(top, bottom), ticks=share.ticks(min_gap=40)),
            _x_axis(ratio, bottom, "1 loose, 0 tight", grid=(top, bottom), ticks=ratio.ticks(min_gap=40))]
    y = bottom + 60

    all_pairs = _records(tables["tightness_pairs"])
    domains = list(dict.fromkeys(d for p in all_pairs for d in (p["domain_a"], p["domain_b"])))
    pairs = [p for p in all_pairs if p["block"] == "model" and _num(p.get("cosine")) is not None]
    weights = [w for w in _records(tables["tightness_mgda"]) if _num(w.get("weight")) is not None]
    domains += [d for d in dict.fromkeys(w["domain"] for w in weights) if d not in domains]
    legends = []
    if domains and (pairs or weights):
        cell = max(10.0, min(28.0, 300 / len(domains)))
        index = {d: k for k, d in enumerate(domains)}
        m_top = y + 16
        if pairs:
            texts.append(_text(8, y, "Cosine between domains' gradients (block model)", cls="label", bold=True))
            values = {}
            for p in pairs:
                if p["domain_a"] != p["domain_b"]:
                    values[(index[p["domain_a"]], index[p["domain_b"]])] = p["cosine"]
                    values[(index[p["domain_b"]], index[p["domain_a"]])] = p["cosine"]
            cells += _matrix(values, len(domains), 200, m_top, cell, _cosine_colour,
                             lambda i, j, v: f"cos(G[{domains[i]}], G[{domains[j]}]) = {_fmt(v)}")
            lines.append(_line(200, m_top, 200 + cell * len(domains), m_top + cell * len(domains), stroke="#ccc"))
            for k, d in enumerate(domains):
                texts.append(_text(194, m_top + (k + 0.5) * cell + 4, d, anchor="end", cls="tick"))
                texts.append(_text(200 + (k + 0.5) * cell + 3, m_top + cell * len(domains) + 8, d, anchor="end",
                                   rotate=-40))
            legends.append(_legend(200, m_top + cell * len(domains) + 130, -1.0, 1.0, _cosine_colour,
                                   "cosine", width=180))
        w_bottom = m_top
        if weights:
            w_blocks = _blocks(w["block"] for w in weights)
            w_x0, w_row = 640, max(10.0, min(22.0, 360 / len(w_blocks)))
            w_cell = max(10.0, min(28.0, 260 / len(domains)))
            texts.append(_text(540, y, "MGDA min-norm weights w_d per block", cls="label", bold=True))
            b_index = {b: k for k, b in enumerate(w_blocks)}
            for w in weights:
                cells.append({"x": w_x0 + index[w["domain"]] * w_cell, "y": m_top + b_index[w["block"]] * w_row,
                              "w": w_cell, "h": w_row, "fill": sequential(min(1.0, max(0.0, w["weight"]))),
                              "title": f"{w['block']}, {w['domain']}: weight {_fmt(w['weight'])}"})
            every = math.ceil(12 / w_row)
            for b, k in b_index.items():
                if k % every == 0:
                    texts.append(_text(w_x0 - 6, m_top + (k + 0.5) * w_row + 4, b, anchor="end", cls="tick"))
            w_bottom = m_top + w_row * len(w_blocks)
            for k, d in enumerate(domains):
                texts.append(_text(w_x0 + (k + 0.5) * w_cell + 3, w_bottom + 8, d, anchor="end", rotate=-40))
            legends.append(_legend(w_x0, w_bottom + 130, 0.0, 1.0, sequential, "weight", width=180))
        y = max(m_top + cell * len(domains), w_bottom) + 130 + 44
    n_domains = max(r["n_domains"] for r in rows.values())
    fig = _frame("Tightness: how the domains' gradients compete, per block",
                 _caption(labels, f"n = {n_domains} domains (the loss terms) · {len(blocks)} blocks"), y,
                 cells=cells, dots=dots, lines=lines, paths=[], texts=texts, legends=legends,
                 note="G_d: gradient of domain d's mean passage loss. Cosines between domains' gradients (< 0: a "
                      "conflicting pair, PCGrad's criterion, Yu et al. 2020); MGDA ratio |Σ w_d G_d| / |mean G_d| at "
                      "the min-norm weights w (Sener & Koltun 2018): 1 loose, 0 a Pareto-stationary point (tight). "
                      "No CI: the domains are the unit.")
    fig["axes"] = axes
    return fig


# --- elasticity ------------------------------------------------------------------------------------------


@figure("elasticity_shares", "elasticity_share", "elasticity")
def elasticity_shares(tables: dict, labels: dict, seed: dict) -> dict | None:
    """Per tuned domain: the elastic share 1 − forgetting_ewc / forgetting with its 95% CI, and the forgetting
    without and with the EWC anchor; below, every domain's held-out loss change without and with it."""
    rows = _records(tables["elasticity_share"])
    changes = [c for c in _records(tables["elasticity"]) if _num(c.get("change")) is not None]
    if not rows:
        return None
    top, row_h, label_x = 64, 26, 240
    bottom = top + row_h * len(rows)
    shares = [v for r in rows for v in (r.get("elastic_share"), r.get("ci_low"), r.get("ci_high"))]
    share = linear_scale(shares, 250, 580, include=[0, 1], bounds=(-1, 2))
    nats = linear_scale([v for r in rows for v in (r.get("forgetting"), r.get("forgetting_ewc"))], 640, 960,
                        include=[0])
    texts = [_text(label_x, top - 10, "tuned domain", anchor="end", cls="label", bold=True),
             _text(250, top - 10, "elastic share 1 − forgetting_ewc / forgetting", cls="label", bold=True),
             _text(640, top - 10, "forgetting: mean loss rise of the other domains", cls="label", bold=True)]
    dots, lines = [], [_line(share(0), top, share(0), bottom, stroke="#777"),
                       _line(share(1), top, share(1), bottom, stroke="#777", dash="4,2"),
                       _line(nats(0), top, nats(0), bottom, stroke="#777")]
    for i, r in enumerate(rows):
        y = top + (i + 0.5) * row_h
        texts.append(_text(label_x, y + 4, _fit(r["tuned_domain"], label_x - 8), anchor="end", cls="row"))
        e = _num(r.get("elastic_share"))
        if e is None:
            texts.append(_text(256, y + 4, "undefined: tuning forgot nothing (forgetting ≤ 0)", fill="#666"))
        else:
            dots.append(_dot(share(e), y, _BLUE, f"tuned on {r['tuned_domain']}: elastic share "
                             + _ci_text(e, r.get("ci_low"), r.get("ci_high")), xci=_ends(share, r.get("ci_low"),
                                                                                        r.get("ci_high")),
                             clipped=share.clipped(e)))
        f, fe = _num(r.get("forgetting")), _num(r.get("forgetting_ewc"))
        if f is not None and fe is not None:
            lines.append(_line(nats(f), y, nats(fe), y, stroke="#999", width=1.5))
        gains = f" (own loss drop {_fmt(r['gain'])} without, {_fmt(r['gain_ewc'])} with the anchor)"
        if f is not None:
            dots.append(_dot(nats(f), y, _ORANGE, f"tuned on {r['tuned_domain']}: forgetting {_fmt(f)} nats "
                             "without the anchor" + gains, filled=False))
        if fe is not None:
            dots.append(_dot(nats(fe), y, _ORANGE, f"tuned on {r['tuned_domain']}: forgetting {_fmt(fe)} nats "
                             "with the EWC anchor" + gains))
    axes = [_x_axis(share, bottom, "share of the forgetting the anchor removes (0 none, 1 all)", grid=(top, bottom)),
            _x_axis(nats, bottom, "nats (ring: plain tuning, dot: with EWC)", grid=(top, bottom))]
    y = bottom + 56
    if changes:
        texts.append(_text(8, y, "Held-out loss change of every domain after tuning (ring: plain, dot: with the "
                                 "EWC anchor; > 0 forgets)", cls="label", bold=True))
        keyed: dict[tuple[str, str], dict] = {}
        for c in changes:
            keyed.setdefault((c["tuned_domain"], c["domain"]), {})[c["penalty"]] = c["change"]
        c_top, c_row = y + 14, 18
        several = len({t for t, _ in keyed}) > 1
        c_bottom = c_top + c_row * len(keyed)
        delta = linear_scale([v for pair in keyed.values() for v in pair.values()], 250, 960, include=[0])
        lines.append(_line(delta(0), c_top, delta(0), c_bottom, stroke="#777"))
        for k, ((tuned, domain), by_penalty) in enumerate(keyed.items()):
            cy = c_top + (k + 0.5) * c_row
            own = " (tuned)" if tuned == domain else ""
            texts.append(_text(label_x, cy + 4, _fit(f"{tuned} → {domain}{own}" if several else f"{domain}{own}",
                                                     label_x - 8), anchor="end", cls="tick"))
            if "none" in by_penalty and "ewc" in by_penalty:
                lines.append(_line(delta(by_penalty["none"]), cy, delta(by_penalty["ewc"]), cy, stroke="#999"))
            for penalty, value in by_penalty.items():
                dots.append(_dot(delta(value), cy, _ORANGE, f"tuned on {tuned}, {domain}: loss change "
                                 f"{_fmt(value)} nats ({'plain' if penalty == 'none' else 'EWC anchor'})",
                                 filled=penalty != "none", r=3.0))
        axes.append(_x_axis(delta, c_bottom, "loss_after − loss_before (nats per token)", grid=(c_top, c_bottom)))
        y = c_bottom + 56
    tokens = sum({c["domain"]: c.get("n_tokens") or 0 for c in changes}.values())  # every tuning scores the same
    fig = _frame("Elasticity: how much forgetting the EWC anchor removes",
                 _caption(labels, f"n = {max(r['n_domains'] for r in rows)} other domains per tuned domain · "
                                  f"{tokens} held-out tokens"), y,
                 cells=[], dots=dots, lines=lines, paths=[], texts=texts, legends=[],
                 note="A copy of the model is fine-tuned on one domain, plainly and with the EWC anchor "
                      "λ Σ F_i (θ_i − θ*_i)² (Kirkpatrick et al. 2017); forgetting: the mean held-out loss rise of "
                      "the other domains. Whiskers: 95% BCa bootstrap over the other domains (paired); a triangle "
                      "marks a share beyond the axis.")
    fig["axes"] = axes
    return fig


# --- stiffness -------------------------------------------------------------------------------------------


@figure("stiffness_recovery", "stiffness_radii", "stiffness")
def stiffness_recovery(tables: dict, labels: dict, seed: dict) -> dict | None:
    """Against the push's radius: the share of the loss rise recovered beyond the control and the share of the
    push the weights returned (means over directions with 95% CIs, each direction a grey dot), and below, the
    loss rise itself."""
    radii = sorted(_records(tables["stiffness_radii"]), key=lambda r: r["radius"])
    points = _records(tables["stiffness"])
    if not radii:
        return None
    x0, x1, top, bottom = 90, 850, 64, 304
    xs = linear_scale([r["radius"] for r in radii], x0 + 24, x1 - 24, include=[0])  # radius 0 clear of the y axis
    values = [v for r in radii for v in (r.get("recovered"), r.get("recovered_ci_low"), r.get("recovered_ci_high"),
                                         r.get("returned"), r.get("returned_ci_low"), r.get("returned_ci_high"))]
    values += [p.get("recovered") for p in points]
    ys = linear_scale(values, bottom, top, include=[0, 1], bounds=(-1, 2))
    dots, lines, paths, texts = [], [], [], []
    for level, word in ((0, "flexible (plastic)"), (1, "stiff (elastic)")):
        lines.append(_line(x0, ys(level), x1, ys(level), stroke="#555", dash="4,2"))
        texts.append(_text(x1 + 6, ys(level) + 4, word, fill="#555"))
    for p in points:
        v = _num(p.get("recovered"))
        if v is not None:
            dots.append(_dot(xs(p["radius"]) - 8, ys(v), _GREY, f"radius {_fmt(p['radius'])}, direction "
                             f"{p['direction']}: recovered {_fmt(v)} of a rise of {_fmt(p['rise'])} nats", r=2.2,
                             clipped=ys.clipped(v)))
    for name, colour, shift in (("recovered", _BLUE, 0.0), ("returned", _ORANGE, 8.0)):
        line = []
        for r in radii:
            v = _num(r.get(name))
            if v is None:
                continue
            line.append((xs(r["radius"]) + shift, ys(v)))
            what = "of the loss rise recovered" if name == "recovered" else "of the push the weights undid"
            ci = _ci_text(v, r.get(name + "_ci_low"), r.get(name + "_ci_high"))
            dots.append(_dot(xs(r["radius"]) + shift, ys(v), colour,
                             f"radius {_fmt(r['radius'])}: {ci} {what} ({r['n_directions']} directions)",
                             yci=_ends(ys, r.get(name + "_ci_low"), r.get(name + "_ci_high")), clipped=ys.clipped(v)))
        if len(line) > 1:
            paths.append({"points": " ".join(f"{x:.1f},{y:.1f}" for x, y in line), "stroke": colour, "width": 1.8,
                          "dash": None})
    for r in radii:
        if _num(r.get("recovered")) is None:
            texts.append(_text(xs(r["radius"]), bottom - 6, "no rise", anchor="middle", fill="#666"))
    texts += [_text(x0, top - 10, "share of the loss rise recovered", cls="label", fill=_BLUE, bold=True),
              _text(x0 + 280, top - 10, "share of the push the weights undid", cls="label", fill=_ORANGE, bold=True),
              _text(x0 + 560, top - 10, "grey: single directions", cls="label", fill="#777")]
    r_top, r_bottom = bottom + 70, bottom + 230
    rises = [v for p in points for v in [_num(p.get("rise"))] if v is not None]
    rs = linear_scale(rises + [_num(r.get("rise")) for r in radii], r_bottom, r_top, include=[0])
    texts.append(_text(x0, r_top - 10, "loss rise of the push L(θ*+r·d) − L(θ*)", cls="label", bold=True))
    lines.append(_line(x0, rs(0), x1, rs(0), stroke="#777"))
    for p in points:
        v = _num(p.get("rise"))
        if v is not None:
            dots.append(_dot(xs(p["radius"]), rs(v), _GREY, f"radius {_fmt(p['radius'])}, direction {p['direction']}: "
                             f"rise {_fmt(v)} nats", r=2.2))
    mean_rise = [(xs(r["radius"]), rs(r["rise"])) for r in radii if _num(r.get("rise")) is not None]
    if len(mean_rise) > 1:
        paths.append({"points": " ".join(f"{x:.1f},{y:.1f}" for x, y in mean_rise), "stroke": "#222", "width": 1.5,
                      "dash": None})
    dots += [_dot(x, y, "#222", f"radius {_fmt(r['radius'])}: mean rise {_fmt(r['rise'])} nats")
             for (x, y), r in zip(mean_rise, [r for r in radii if _num(r.get("rise")) is not None], strict=True)]
    tokens = next((p.get("n_tokens") for p in points if p.get("n_tokens")), "?")
    steps = (labels.get("settings") or {}).get("steps")
    steps = f" · {steps} step{'s' if steps != 1 else ''}" if steps else ""
    fig = _frame("Stiffness: how much of a random push the loss and the weights undo",
                 _caption(labels, f"n = {max(r['n_directions'] for r in radii)} directions per radius · "
                                  f"{tokens} scored tokens{steps}"),
                 r_bottom + 50, cells=[], dots=dots, lines=lines, paths=paths, texts=texts, legends=[],
                 note="θ* pushed by r along a filter-normalised Gaussian direction (Li et al. 2018), then plain "
                      "gradient steps from there and from θ* (the control). Recovered: 1 − (L − L_control) / rise; "
                      "returned: 1 − |θ − θ_control| / |push|. Means over directions whose push raised the loss, "
                      "whiskers 95% BCa bootstrap over directions; points beyond the axis are pinned to its edge.")
    fig["axes"] = [_x_axis(xs, bottom, "radius r (push relative to each filter's norm)"),
                   _y_axis(ys, x0, "share (1 stiff, 0 flexible)", grid=(x0, x1), ticks=ys.ticks(min_gap=30)),
                   _x_axis(xs, r_bottom, "radius r"),
                   _y_axis(rs, x0, "rise (nats)", grid=(x0, x1), ticks=rs.ticks(min_gap=30))]
    return fig


# --- Hessian coupling --------------------------------------------------------------------------------------


@figure("hessian_coupling_heads", "hessian_coupling", "hessian_coupling_layers")
def hessian_coupling_heads(tables: dict, labels: dict, seed: dict) -> dict | None:
    """Per layer, the unit × unit Hessian coupling c_ab as a small heatmap (0 white), and below, each layer's
    mean coupling with its 95% CI on a log axis."""
    pairs = [p for p in _records(tables["hessian_coupling"]) if _num(p.get("coupling")) is not None]
    layer_rows = [r for r in _records(tables["hessian_coupling_layers"]) if _num(r.get("coupling")) is not None]
    if not pairs and not layer_rows:
        return None
    grouped = max([p.get("heads_per_unit") or 1 for p in pairs] + [r.get("heads_per_unit") or 1 for r in layer_rows])
    unit = "KV group" if grouped > 1 else "head"
    layers = sorted({p["layer"] for p in pairs} | {r["layer"] for r in layer_rows})
    cells, texts, lines, dots, legends = [], [], [], [], []
    y = 64
    if pairs:
        limit = max(p["coupling"] for p in pairs) or 1.0
        n_units = max(p["unit_b"] for p in pairs) + 1
        cell = max(4.0, min(18.0, 110 / n_units))
        size = cell * n_units
        per_row, pitch = _small_multiples(len(layers), size, x0=20, gap=26)
        texts.append(_text(8, y - 10, f"Hessian coupling c_ab between the {unit}s of each layer "
                                      f"(rows a, columns b: {unit}s 0 … {n_units - 1})", cls="label", bold=True))
        g_top = y + 14
        panels = [layer for layer in layers if any(p["layer"] == layer for p in pairs)]
        for k, layer in enumerate(panels):
            gx, gy = 20 + (k % per_row) * pitch, g_top + (k // per_row) * (size + 30)
            values = {}
            se = {}
            for p in pairs:
                if p["layer"] == layer:
                    values[(p["unit_a"], p["unit_b"])] = values[(p["unit_b"], p["unit_a"])] = p["coupling"]
                    se[(p["unit_a"], p["unit_b"])] = se[(p["unit_b"], p["unit_a"])] = p.get("stderr")
            texts.append(_text(gx, gy - 4, f"layer {layer}"))
            cells += _matrix(values, n_units, gx, gy, cell, lambda v: diverging(v, limit),
                             lambda i, j, v, layer=layer, se=se: f"layer {layer}, {unit}s {i} and {j}: c = {_fmt(v)}"
                             + ("" if _num(se.get((i, j))) is None else f" ± {_fmt(se[(i, j)])} (s.e.)"))
            cells += [{"x": gx + i * cell, "y": gy + i * cell, "w": cell, "h": cell, "fill": "#e4e4e4",
                       "title": f"layer {layer}, {unit} {i}: the diagonal block (c = 1 by definition)"}
                      for i in range(n_units)]
        y = g_top + math.ceil(len(panels) / per_row) * (size + 30)
        legends.append(_legend(20, y, 0.0, limit, lambda v: diverging(v, limit),
                               "c_ab (0 white: uncoupled; darkest red: the largest measured)"))
        y += 60
    axes = []
    if layer_rows:
        top, bottom, x0, x1 = y + 16, y + 216, 90, 960
        texts.append(_text(8, y, "Mean coupling per layer over its pairs of " + unit + "s", cls="label", bold=True))
        band = (x1 - x0) / len(layers)
        place = {layer: x0 + (k + 0.5) * band for k, layer in enumerate(layers)}
        ys = log_scale([v for r in layer_rows for v in (r["coupling"], r.get("ci_low"), r.get("ci_high"))], bottom,
                       top)
        for r in layer_rows:
            dots.append(_dot(place[r["layer"]], ys(r["coupling"]), _POS_HEX,
                             f"layer {r['layer']}: mean c {_ci_text(r['coupling'], r.get('ci_low'), r.get('ci_high'))} "
                             f"over {r['n_pairs']} pairs", yci=_ends(ys, r.get("ci_low"), r.get("ci_high"))))
        axes = [{"orient": "x", "at": bottom, "start": x0, "end": x1, "label": "decoder layer",
                 "ticks": _band_ticks(layers, x0, band, min_gap=22), "grid": None},
                _y_axis(ys, x0, "mean c_ab (log scale)", grid=(x0, x1))]
        y = bottom + 50
    probes = next((r.get("n_probes") for r in pairs + layer_rows if r.get("n_probes")), "?")
    tokens = next((r.get("n_tokens") for r in pairs + layer_rows if r.get("n_tokens")), "?")
    fig = _frame(f"Hessian coupling between attention {unit}s",
                 _caption(labels, f"n = {probes} probes per {unit} · {tokens} scored tokens · {len(layers)} layers"
                                  + (f" · {grouped} query heads per KV group" if grouped > 1 else "")), y,
                 cells=cells, dots=dots, lines=lines, paths=[], texts=texts, legends=legends,
                 note="c_ab = ‖H_ab‖_F / √(‖H_aa‖_F ‖H_bb‖_F), the off-diagonal Hessian block between two units' "
                      "attention parameters normalised by their own blocks (0: uncoupled; at most 1 where H is "
                      "positive semi-definite), estimated from Gaussian probes (Gratton & Titley-Peloquin 2018). "
                      "Whiskers: 95% CI of the layer mean over probes, on the log scale (delta method, "
                      "Welch-Satterthwaite t).")
    fig["axes"] = axes
    return fig
