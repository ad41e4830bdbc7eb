"""The first instruments' figures: perplexity, coupling, ablation, Hessian spectrum, gradient, interpolation."""

from __future__ import annotations

import math
import re

from ._base import (_NEG_HEX, _POS_HEX, Scale, _band_ticks, _caption, _fmt, _frame, _records, _x_axis, _y_axis,
                    asinh_scale, diverging, figure, linear_scale, sequential)



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
