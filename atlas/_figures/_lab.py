"""The Lab's and the weight-space geometry instruments' figures: a Lab run's training curves with its phase
transition, algorithmic branches (CKA between seeds), memory's endpoints and their CKA matrix, and symmetry
orbits with the barrier before and after weight matching.

Every function skips rows whose drawn value is missing (NaN, null) and returns None when none is left.
"""

from __future__ import annotations

import math

from ._base import (_NEG_HEX, _POS_HEX, Scale, _band_ticks, _caption, _fmt, _frame, _records, _x_axis,
                    _y_axis, asinh_scale, figure, linear_scale, log_scale, sequential)

# Okabe & Ito (2008) colour-blind-safe qualitative colours, for categories without an order (domains, series)
CATEGORICAL = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442")
_TRAIN, _HELDOUT = "#d55e00", "#0072b2"


def _ok(v) -> bool:
    """A value that can be drawn: not missing, finite."""
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _polyline(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


def _legend(items: list[tuple[str, str]], x: float, y: float) -> list[dict]:
    """Legend entries (colour, label) in one row from ``x``, spaced by their labels' length (11 px text)."""
    out = []
    for colour, label in items:
        out.append({"x": x, "y": y, "colour": colour, "label": label})
        x += 22 + 6.2 * len(label)
    return out


# --- the Lab: training curves and the phase transition ----------------------------------------------------

_ORDER_NAMES = {"heldout_acc": "held-out accuracy", "fourier_sparsity": "Fourier sparsity",
                "generalisation_gap": "generalisation gap", "weight_norm": "weight norm"}


@figure("training_curves", "phase_transitions", "phase_transitions_summary")
def training_curves(tables: dict, labels: dict, seed: dict) -> dict | None:
    """A Lab run's training and held-out accuracy (top) and loss (bottom, log scale when positive) against the
    training step, the held-out accuracy's jump window shaded across both and every other order parameter's
    λ* dashed."""
    rows = sorted((r for r in _records(tables["phase_transitions"]) if _ok(r.get("step"))), key=lambda r: r["step"])
    acc_cols, loss_cols = ("train_acc", "heldout_acc"), ("train_loss", "heldout_loss")
    if not any(_ok(r.get(c)) for r in rows for c in acc_cols + loss_cols):
        return None
    summary = [s for s in _records(tables["phase_transitions_summary"])
               if _ok(s.get("window_start")) and _ok(s.get("window_end")) and _ok(s.get("step"))]
    x0, x1 = 90, 960
    a_top, a_bottom = 58, 218
    b_top, b_bottom = 268, 428
    steps = [r["step"] for r in rows]
    xs = linear_scale(steps + [v for s in summary for v in (s["window_start"], s["window_end"])], x0, x1,
                      bounds=(0, math.inf))
    ya = Scale("linear", 0.0, 1.0, a_bottom, a_top)
    losses = [r[c] for r in rows for c in loss_cols if _ok(r.get(c))]
    yb = (log_scale(losses, b_bottom, b_top) if losses and min(losses) > 0
          else linear_scale(losses, b_bottom, b_top, include=[0]))
    series = []
    for cols, scale in ((acc_cols, ya), (loss_cols, yb)):
        for col, colour, name in zip(cols, (_TRAIN, _HELDOUT), ("training set", "held-out set"), strict=True):
            pts = [(xs(r["step"]), scale(r[col]), r) for r in rows if _ok(r.get(col))]
            series.append({"column": col, "colour": colour, "name": name, "line": _polyline([p[:2] for p in pts]),
                           "points": [{"x": x, "y": y, "title": f"step {r['step']}: {col} {_fmt(r[col])}"}
                                      for x, y, r in pts]})
    primary = next((s for s in summary if s["order_parameter"] == "heldout_acc"), summary[0] if summary else None)
    band = None
    if primary is not None:
        local = primary.get("local_loss_change")
        band = {"x": xs(primary["window_start"]), "w": xs(primary["window_end"]) - xs(primary["window_start"]),
                "top": a_top, "bottom": b_bottom, "x_star": xs(primary["step"]),
                "label": f"{_ORDER_NAMES.get(primary['order_parameter'], primary['order_parameter'])} "
                         f"{'rises' if primary['direction'] == 'rise' else 'falls'} at λ* = {_fmt(primary['step'])} "
                         f"(window {_fmt(primary['window_start'])}–{_fmt(primary['window_end'])}): "
                         f"jump ratio {_fmt(primary['jump_ratio'])}{' (capped)' if primary.get('capped') else ''}, "
                         f"persistence {_fmt(primary['persistence'])}"
                         + ("" if not _ok(local) else f", training loss changes {_fmt(100 * local)}% there")}
    others = [s for s in summary if s is not primary]
    marks = []
    for i, s in enumerate(others):
        x = xs(s["step"])
        right = x < (x0 + x1) / 2
        marks.append({"x": x, "top": a_top, "bottom": b_bottom, "label_y": a_top + 12 + 12 * i,
                      "label_x": x + 4 if right else x - 4, "anchor": "start" if right else "end",
                      "colour": CATEGORICAL[2 + i % 4],
                      "label": f"λ* {_ORDER_NAMES.get(s['order_parameter'], s['order_parameter'])} {_fmt(s['step'])}"})
    resolution = next((r["heldout_acc_resolution"] for r in rows if _ok(r.get("heldout_acc_resolution"))), None)
    heldout = "" if resolution is None else f", {round(1 / resolution)} held-out targets"
    fig = _frame("Training curves and the phase transition",
                 _caption(labels, f"n = {len(rows)} checkpoints{heldout}"), b_bottom + 82,
                 series=series, band=band, marks=marks, band_label_y=b_bottom + 72,
                 legend=_legend([(_TRAIN, "training set"), (_HELDOUT, "held-out set")], x0, b_bottom + 52), panels=[
                     {"x": x0, "y": a_top - 6, "label": "accuracy (top-1)"},
                     {"x": x0, "y": b_top - 6, "label": "loss (mean cross-entropy, nats)"}],
                 note="The Lab's own evaluation at each checkpoint on the whole training and held-out sets "
                      "(modular addition: the answer at the last position). Shaded: the window of training time "
                      "where the held-out accuracy rises most (atlas.instruments._order.transition: equal windows "
                      "as wide as the largest gap between checkpoints), its midpoint λ* solid; dashed: λ* of the "
                      "other order parameters (Nanda et al. 2023's Fourier sparsity; Liu et al. 2023's weight norm). "
                      "Grokking (Power et al. 2022) shows as held-out accuracy jumping long after training accuracy.")
    step_ticks = [t for t in xs.ticks(min_gap=60) if float(t["value"]).is_integer()]  # steps are whole numbers
    step_ticks = step_ticks if len(step_ticks) >= 2 else None
    fig["axes"] = [_x_axis(xs, a_bottom, "", grid=(a_top, a_bottom), ticks=step_ticks),
                   _y_axis(ya, x0, "accuracy", grid=(x0, x1)),
                   _x_axis(xs, b_bottom, "training step λ (optimiser updates)", grid=(b_top, b_bottom),
                           ticks=step_ticks),
                   _y_axis(yb, x0, f"loss (nats, {yb.note})", grid=(x0, x1))]
    return fig


# --- algorithmic branches ------------------------------------------------------------------------------

_COMPARISONS = {"between_seeds": "A vs B (matched loss)", "within_model": "A vs its previous checkpoint",
                "within_other": "B vs its previous checkpoint", "peak_model": "A vs its loss peak",
                "peak_other": "B vs its loss peak"}


@figure("branch_cka", "algorithmic_branches", "algorithmic_branches_chunks")
def branch_cka(tables: dict, labels: dict, seed: dict) -> dict | None:
    """Debiased CKA per comparison and layer as a dot plot: the whole probe set filled, each chunk's value a grey
    tick, the permutation p-value and the steps compared beside it."""
    rows = [r for r in _records(tables["algorithmic_branches"]) if _ok(r.get("cka"))]
    if not rows:
        return None
    order = {c: i for i, c in enumerate(_COMPARISONS)}
    rows.sort(key=lambda r: (order.get(r["comparison"], len(order)), r["comparison"], r["layer"]))
    chunks: dict[tuple, list[float]] = {}
    for c in _records(tables["algorithmic_branches_chunks"]):
        if _ok(c.get("cka")):
            chunks.setdefault((c["comparison"], c["layer"]), []).append(c["cka"])
    top, row_h, group_gap = 58, 20, 14
    x0, x1, label_x, text_x = 250, 720, 242, 732
    xs = linear_scale([r["cka"] for r in rows] + [v for vs in chunks.values() for v in vs], x0, x1,
                      include=[0, 1], bounds=(-1, 1))
    drawn, groups, y = [], [], top
    for i, r in enumerate(rows):
        if i and r["comparison"] != rows[i - 1]["comparison"]:
            y += group_gap
        if not i or r["comparison"] != rows[i - 1]["comparison"]:
            groups.append({"y": y, "label": _COMPARISONS.get(r["comparison"], r["comparison"])})
        mid = y + row_h / 2
        values = chunks.get((r["comparison"], r["layer"]), [])
        drawn.append({"y": mid, "x": xs(r["cka"]), "label": f"layer {r['layer']}",
                      "chunks": [xs(v) for v in values],
                      "colour": _HELDOUT if r["comparison"] == "between_seeds" else "#555",
                      "text": f"{_fmt(r['cka'])} · p = {_fmt(r['p_value'])} · steps {r['step_a']} vs {r['step_b']}",
                      "title": f"{r['comparison']}, layer {r['layer']}: CKA {_fmt(r['cka'])} "
                               f"(p = {_fmt(r['p_value'])}); "
                               f"steps {r['step_a']} (loss {_fmt(r['loss_a'])}) vs {r['step_b']} "
                               f"(loss {_fmt(r['loss_b'])})"
                               + (f"; chunks {', '.join(_fmt(v) for v in values)}" if values else "")})
        y += row_h
    bottom = y + 4
    for g in groups:
        g["y_label"] = g["y"] + row_h / 2 + 4
    n_chunks = max((len(v) for v in chunks.values()), default=0)
    fig = _frame("Algorithmic branches: representation similarity (CKA)",
                 _caption(labels, f"n = {rows[0]['n']} probe pairs · matched held-out loss L* = "
                                  f"{_fmt(rows[0]['target_loss'])}" + (f" · {n_chunks} chunks" if n_chunks else "")),
                 bottom + 48, rows=drawn, groups=groups, label_x=label_x, text_x=text_x, top=top, bottom=bottom,
                 x_one=xs(1.0), x_zero=xs(0.0), other=(labels.get("settings") or {}).get("other", "B"),
                 note="Debiased linear CKA (Kornblith et al. 2019; Song et al. 2012's unbiased HSIC) of the residual "
                      "stream after each decoder layer on held-out modular-addition pairs; 1: the same representation "
                      "up to rotation and scale, 0: unrelated. Dot: the whole probe set; grey ticks: each disjoint "
                      "chunk of it; p: one-sided permutation test of no relation. A = the model, B = the other seed; "
                      "the within-run comparisons are the reference a between-seeds difference is weighed against.")
    fig["axes"] = [_x_axis(xs, bottom, "debiased linear CKA", grid=(top, bottom))]
    return fig


# --- memory ----------------------------------------------------------------------------------------------


def _short(text: str, n: int) -> str:
    """``text`` cut to ``n`` characters with an ellipsis (the whole of it goes in the element's title)."""
    return text if len(text) <= n else text[:n - 1] + "…"


def _endpoint_key(r: dict) -> tuple:
    return (r["curriculum"], r["seed"])


@figure("memory_endpoints", "memory", "memory_domains")
def memory_endpoints(tables: dict, labels: dict, seed: dict) -> dict | None:
    """One row per endpoint, grouped by curriculum, in four panels: its held-out loss above the common target
    (the gap: the loss itself would spend the axis's resolution on a level shared by every endpoint), the
    Hessian's extreme eigenvalues, its trace with a 95% interval, and the per-domain loss profile."""
    endpoints = sorted((r for r in _records(tables["memory"]) if _ok(r.get("heldout_loss"))), key=_endpoint_key)
    if not endpoints:
        return None
    domain_rows = [d for d in _records(tables["memory_domains"]) if _ok(d.get("loss"))]
    domains = sorted({d["domain"] for d in domain_rows})
    colour = {d: CATEGORICAL[i % len(CATEGORICAL)] for i, d in enumerate(domains)}
    top, row_h, header_h, label_x = 62, 18, 18, 150
    spans = [(160, 340), (370, 560), (590, 765), (795, 960)]
    ys, groups, y = {}, [], top
    for i, r in enumerate(endpoints):
        if not i or r["curriculum"] != endpoints[i - 1]["curriculum"]:
            groups.append({"y": y + 13, "label": f"curriculum {r['curriculum']}"})
            y += header_h
        ys[_endpoint_key(r)] = y + row_h / 2
        y += row_h
    bottom = y + 4
    target = next((r["target"] for r in endpoints if _ok(r.get("target"))), None)
    for r in endpoints:
        if not _ok(r.get("gap")) and target is not None:
            r["gap"] = r["heldout_loss"] - target
    gaps = [r for r in endpoints if _ok(r.get("gap"))]
    loss = linear_scale([r["gap"] for r in gaps], *spans[0], include=[0])
    lambdas = [r[c] for r in endpoints for c in ("lambda_max", "lambda_min") if _ok(r.get(c))]
    eig = asinh_scale(lambdas, *spans[1])
    traces = [v for r in endpoints if _ok(r.get("trace"))
              for v in (r["trace"], r["trace"] - 1.96 * (r.get("trace_stderr") or 0),
                        r["trace"] + 1.96 * (r.get("trace_stderr") or 0))]
    trace = asinh_scale(traces, *spans[2])
    profile = linear_scale([d["loss"] for d in domain_rows], *spans[3])
    points = []
    for r in endpoints:
        yy = ys[_endpoint_key(r)]
        who = f"{r['curriculum']} seed {r['seed']} (step {r['step']})"
        if _ok(r.get("gap")):
            points.append({"x": loss(r["gap"]), "y": yy, "colour": "#333", "filled": bool(r.get("matched")),
                           "title": f"{who}: held-out loss {_fmt(r['heldout_loss'])}, {_fmt(r['gap'])} nats above the "
                                    "target" + ("" if r.get("matched") else " (not matched)")})
        for col, hexc in (("lambda_max", _POS_HEX), ("lambda_min", _NEG_HEX)):
            if _ok(r.get(col)):
                ok = bool(r.get(f"{col}_converged"))
                points.append({"x": eig(r[col]), "y": yy, "colour": hexc, "filled": ok,
                               "title": f"{who}: {col} {_fmt(r[col])}" + ("" if ok else " (not converged)")})
        if _ok(r.get("trace")):
            se = r.get("trace_stderr") if _ok(r.get("trace_stderr")) else None
            points.append({"x": trace(r["trace"]), "y": yy, "colour": "#333", "filled": True,
                           "x_lo": None if se is None else trace(r["trace"] - 1.96 * se),
                           "x_hi": None if se is None else trace(r["trace"] + 1.96 * se),
                           "title": f"{who}: trace {_fmt(r['trace'])}"
                                    + ("" if se is None else f" ± {_fmt(se)} (s.e.)")})
    for d in domain_rows:
        yy = ys.get(_endpoint_key(d))
        if yy is not None:
            points.append({"x": profile(d["loss"]), "y": yy, "colour": colour[d["domain"]], "filled": True,
                           "title": f"{d['curriculum']} seed {d['seed']}: {d['domain']} loss {_fmt(d['loss'])} "
                                    f"({d['n_tokens']} tokens)"})
    row_labels = [{"y": ys[_endpoint_key(r)] + 4, "text": f"seed {r['seed']} · step {r['step']}"} for r in endpoints]
    tokens = endpoints[0].get("n_tokens")
    fig = _frame("Memory: endpoints of two curricula at matched held-out loss",
                 _caption(labels, f"n = {len(endpoints)} endpoints, {tokens} held-out tokens each · "
                                  f"{endpoints[0].get('n_params')} parameters"), bottom + 64,
                 points=[p for p in points if "x_lo" not in p], whiskered=[p for p in points if "x_lo" in p],
                 groups=groups, row_labels=row_labels, label_x=label_x, top=top, bottom=bottom,
                 target={"x": loss(0), "label": "the target" if target is None else f"target {_fmt(target)} nats"},
                 zero={"eig": eig(0), "trace": trace(0)},
                 legend=_legend([(colour[d], d) for d in domains], spans[0][0], bottom + 56),
                 panel_titles=[{"x": a, "label": t} for (a, _), t in zip(spans, (
                     "loss − target (filled: matched)", "Hessian λ_max (red), λ_min (blue)",
                     "Hessian trace ± 1.96 s.e.", "loss per domain"), strict=True)],
                 note="Each endpoint is a Lab run's checkpoint (in the last curriculum phase) closest to the common "
                      "target held-out loss; whatever still tells the curricula apart there is memory. Hessian of the "
                      "held-out loss: Lanczos extremes (hollow: the residual test failed) and Hutchinson's trace "
                      "(± 1.96 standard errors). Endpoints of one seed share initial weights across curricula.")
    fig["axes"] = [_x_axis(loss, bottom, "held-out loss − target" + ("" if target is None else f" {_fmt(target)}")
                           + " (nats)", grid=(top, bottom)),
                   _x_axis(eig, bottom, "eigenvalue (asinh)", grid=(top, bottom)),
                   _x_axis(trace, bottom, "tr H (asinh)", grid=(top, bottom)),
                   _x_axis(profile, bottom, "loss (nats)", grid=(top, bottom))]
    return fig


@figure("memory_cka", "memory_pairs")
def memory_cka(tables: dict, labels: dict, seed: dict) -> dict | None:
    """The endpoints' pairwise mean-over-layers CKA as a symmetric matrix (Purples, 0 light to 1 dark), the
    endpoints ordered by curriculum then seed, each curriculum's block outlined."""
    pairs = [p for p in _records(tables["memory_pairs"]) if _ok(p.get("cka"))]
    if not pairs:
        return None
    ends = sorted({(p["curriculum_a"], p["seed_a"]) for p in pairs} | {(p["curriculum_b"], p["seed_b"]) for p in pairs})
    index = {e: i for i, e in enumerate(ends)}
    top, x0 = 58, 280
    cell = max(14.0, min(48.0, 440 / len(ends)))
    bottom = top + cell * len(ends)
    cells = []
    for p in pairs:
        a, b = (p["curriculum_a"], p["seed_a"]), (p["curriculum_b"], p["seed_b"])
        t = min(max(p["cka"], 0.0), 1.0)
        title = (f"{a[0]} seed {a[1]} vs {b[0]} seed {b[1]}: CKA {_fmt(p['cka'])}, |θa − θb| "
                 f"{_fmt(p['parameter_distance'])}, profile distance {_fmt(p['profile_distance'])} nats"
                 + ("" if not _ok(p.get("log_lambda_gap")) else f", |Δ log λ_max| {_fmt(p['log_lambda_gap'])}")
                 + ("" if not _ok(p.get("log_trace_gap")) else f", |Δ log tr H| {_fmt(p['log_trace_gap'])}"))
        for i, j in ((index[a], index[b]), (index[b], index[a])):
            cells.append({"x": x0 + j * cell, "y": top + i * cell, "w": cell, "h": cell, "fill": sequential(t),
                          "text": _fmt(round(p["cka"], 2)) if cell >= 30 else "", "light": t > 0.55, "title": title})
    blocks, start = [], 0
    for i in range(1, len(ends) + 1):
        if i == len(ends) or ends[i][0] != ends[start][0]:
            blocks.append({"x": x0 + start * cell, "y": top + start * cell, "size": (i - start) * cell,
                           "label": _short(ends[start][0], 34), "name": ends[start][0],
                           "label_y": top + (start + i) / 2 * cell})
            start = i
    diagonal = [{"x": x0 + i * cell, "y": top + i * cell, "size": cell} for i in range(len(ends))]
    names = [f"seed {s}" for _, s in ends]
    legend_x0, legend_w, steps = x0 + cell * len(ends) + 40, 160, 10
    fig = _frame("Memory: representation similarity of the endpoints (CKA)",
                 _caption(labels, f"n = {len(ends)} endpoints, {len(pairs)} pairs"), bottom + 58,
                 cells=cells, diagonal=diagonal, blocks=blocks, top=top, x0=x0, cell=cell,
                 legend=[{"x": legend_x0 + k * legend_w / steps, "w": legend_w / steps,
                          "fill": sequential((k + 0.5) / steps)} for k in range(steps)],
                 legend_x0=legend_x0, legend_x1=legend_x0 + legend_w, legend_y=top + 10,
                 note="Mean over decoder layers of debiased linear CKA (Kornblith et al. 2019) between two endpoints' "
                      "mean-pooled residual streams on the held-out windows: 1 the same representation up to rotation "
                      "and scale. Outlined: the pairs within one curriculum (different seeds). Endpoints of one seed "
                      "share their initial weights across curricula, so across-curricula pairs of one seed start "
                      "alike. Hover a cell for the pair's parameter, loss-profile and spectrum distances.")
    fig["axes"] = [{"orient": "x", "at": bottom, "start": x0, "end": x0 + cell * len(ends), "label": "endpoint",
                    "ticks": _band_ticks(names, x0, cell, min_gap=40), "grid": None},
                   {"orient": "y", "at": x0, "start": top, "end": bottom, "label": "",
                    "ticks": _band_ticks(names, top, cell, min_gap=12), "grid": None}]
    return fig


# --- symmetry orbits and weight matching -----------------------------------------------------------------

_FAMILIES = {"mlp": "MLP hidden units", "heads": "attention heads", "residual": "residual stream",
             "all": "all three"}


@figure("symmetry_orbits", "symmetry_orbits")
def symmetry_orbits(tables: dict, labels: dict, seed: dict) -> dict | None:
    """Per family of permutations, each draw twice: how far the weights moved (‖σ(θ) − θ‖ / ‖θ‖, left) and how
    much the function changed (max |Δlogit|, asinh, right): far in weights, the same function."""
    rows = [r for r in _records(tables["symmetry_orbits"])
            if _ok(r.get("parameter_distance")) and _ok(r.get("max_abs_dlogit")) and (r.get("weight_norm") or 0) > 0]
    if not rows:
        return None
    families = sorted({r["family"] for r in rows}, key=lambda f: (list(_FAMILIES).index(f) if f in _FAMILIES else 9, f))
    top, row_h, label_x = 58, 28, 180
    bottom = top + row_h * len(families)
    band = {f: top + i * row_h + row_h / 2 for i, f in enumerate(families)}
    left = linear_scale([r["parameter_distance"] / r["weight_norm"] for r in rows], 190, 560, include=[0])
    right = asinh_scale([r["max_abs_dlogit"] for r in rows], 610, 960)
    draws = sorted({r["draw"] for r in rows})
    jitter = {d: (k - (len(draws) - 1) / 2) * min(4.0, 16 / max(1, len(draws))) for k, d in enumerate(draws)}
    points = []
    for r in rows:
        yy = band[r["family"]] + jitter[r["draw"]]
        rel = r["parameter_distance"] / r["weight_norm"]
        who = f"{r['family']}, draw {r['draw']}"
        points.append({"x": left(rel), "y": yy, "colour": _HELDOUT,
                       "title": f"{who}: ‖σ(θ) − θ‖ = {_fmt(r['parameter_distance'])} ({_fmt(rel)} of ‖θ‖)"})
        points.append({"x": right(r["max_abs_dlogit"]), "y": yy, "colour": _TRAIN,
                       "title": f"{who}: max |Δlogit| = {_fmt(r['max_abs_dlogit'])}"})
    fig = _frame("Symmetry orbits: permuted weights, the same function",
                 _caption(labels, f"n = {len(draws)} draws per family · ‖θ‖ = {_fmt(rows[0]['weight_norm'])}"),
                 bottom + 50, points=points, label_x=label_x,
                 row_labels=[{"y": band[f] + 4, "text": _FAMILIES.get(f, f)} for f in families],
                 note="Seeded random permutations σ of the decoder's symmetry group, one family at a time and all "
                      "together. Left: the distance the weights moved, as a share of ‖θ‖; right: the largest change "
                      "of any logit on the probe set (0 up to float rounding on the orbit). Distance in parameter "
                      "space is not distance in function space until the orbit is accounted for.")
    fig["axes"] = [_x_axis(left, bottom, "‖σ(θ) − θ‖₂ / ‖θ‖₂", grid=(top, bottom)),
                   _x_axis(right, bottom, "max |Δlogit| (asinh scale)", grid=(top, bottom))]
    return fig


_DEFINITIONS = {"max_minus_mean_endpoints": "max − mean of ends", "max_minus_linear": "max − chord"}


@figure("symmetry_matching", "symmetry_matching", "symmetry_matching_chunks")
def symmetry_matching(tables: dict, labels: dict, seed: dict) -> dict | None:
    """Before and after weight matching as a dumbbell per barrier definition (each chunk's barrier a grey tick),
    and beside it the parameter distance before and after."""
    rows = [r for r in _records(tables["symmetry_matching"]) if _ok(r.get("barrier"))]
    if not rows:
        return None
    chunks: dict[tuple, list[float]] = {}
    for c in _records(tables["symmetry_matching_chunks"]):
        if _ok(c.get("barrier")):
            chunks.setdefault((c["definition"], c["alignment"]), []).append(c["barrier"])
    definitions = sorted({r["definition"] for r in rows},
                         key=lambda d: (list(_DEFINITIONS).index(d) if d in _DEFINITIONS else 9, d))
    by = {(r["definition"], r["alignment"]): r for r in rows}
    top, row_h, label_x = 58, 40, 210
    bottom = top + row_h * len(definitions)
    barrier = linear_scale([r["barrier"] for r in rows] + [v for vs in chunks.values() for v in vs], 220, 590,
                           include=[0])
    distances = {r["alignment"]: r["parameter_distance"] for r in rows if _ok(r.get("parameter_distance"))}
    distance = linear_scale(list(distances.values()), 660, 960, include=[0])
    colours = {"before": "#888", "after": _HELDOUT}
    dumbbells = []
    for i, d in enumerate(definitions):
        mid = top + i * row_h + row_h / 2
        ends = []
        for k, alignment in enumerate(("before", "after")):
            r = by.get((d, alignment))
            if r is None:
                continue
            y = mid - 6 + 12 * k
            ends.append({"x": barrier(r["barrier"]), "y": y, "colour": colours[alignment], "alignment": alignment,
                         "chunks": [barrier(v) for v in chunks.get((d, alignment), [])],
                         "title": f"{_DEFINITIONS.get(d, d)}, {alignment}: {_fmt(r['barrier'])} nats at t = "
                                  f"{_fmt(r['t_at_max'])}" + ("" if not chunks.get((d, alignment)) else
                                  "; chunks " + ", ".join(_fmt(v) for v in chunks[(d, alignment)]))})
        text = " → ".join(f"{e['alignment']} {_fmt(by[(d, e['alignment'])]['barrier'])}" for e in ends) + " nats"
        dumbbells.append({"y": mid, "ends": ends, "label": _DEFINITIONS.get(d, d), "text": text})
    mid = (top + bottom) / 2
    bars = [{"x": distance(v), "y": mid - 6 + 12 * k, "colour": colours[a], "title": f"{a}: {_fmt(v)}"}
            for k, a in enumerate(("before", "after")) if (v := distances.get(a)) is not None]
    first = rows[0]
    other = (labels.get("settings") or {}).get("other", "?")
    fig = _frame("Weight matching: the loss barrier before and after aligning B to A",
                 f"A = {labels.get('model', '?')} · B = {other} · {labels.get('corpus', '?')} · n = "
                 f"{first['n_pairs']} held-out pairs at each t"
                 + (f", {len(next(iter(chunks.values())))} chunks" if chunks else "")
                 + f" · run {str(labels.get('run', ''))[:8]}", bottom + 64,
                 dumbbells=dumbbells, distance_points=bars, label_x=label_x, x_zero=barrier(0), top=top,
                 bottom=bottom, legend_y=bottom + 58,
                 legend=_legend([(colours["before"], "before: B as trained"),
                                 (colours["after"], "after: σ*(B), aligned to A")], 220, bottom + 58),
                 losses=f"L(A) {_fmt(first['loss_model'])}, L(B) {_fmt(first['loss_other'])} nats",
                 note="Git re-basin weight matching (Ainsworth et al. 2022) permutes B to σ*(B), the same function "
                      "closest to A; barrier: the highest loss on the straight line from A to B (grey, before) or to "
                      "σ*(B) (blue, after) above the mean of its ends or above the chord, as in the interpolation "
                      "instrument. Grey ticks: each disjoint chunk of held-out pairs. Entezari et al. (2022) "
                      "conjecture it vanishes once permutations are accounted for.")
    fig["axes"] = [_x_axis(barrier, bottom, "loss barrier (nats)", grid=(top, bottom)),
                   _x_axis(distance, bottom, "‖θ_A − θ_B‖₂", grid=(top, bottom))]
    return fig
