"""The HTML verdict report: ``index.html`` and one page per Framework term, rendered from the store.

No scripts, no CDN: styles are inline and charts are inline SVG, so the directory
can be mailed or archived as it is. Autoescaping is on: claims, reasons, corpus
names and judgments are data, never markup.

``index.html`` shows the verdicts (with the terms they touch and their Technician
interpretation), the domain-perplexity and coupling charts beside the seed's
record, imported records, the Framework's vocabulary, Technician fields (judged
or "awaiting Technician"), the CISP protocol log by session, and every run's
provenance. ``terms/<id>.html`` shows a term: its definition, formula, citations
and flags, what measures it, and the runs, verdicts and judgments that touch it.
"""

from __future__ import annotations

import math
from importlib.resources import files
from pathlib import Path

import yaml
from jinja2 import Environment, PackageLoader, select_autoescape

from ._judgment import AWAITING, run_fields, verdict_fields
from ._schema import schema_for, table_names
from ._store import Run, Store, latest_verdicts, utcnow
from ._vocabulary import groups, vocabulary

__all__ = ["render_report", "seed_reference"]


def seed_reference() -> dict:
    """The seed's April 2026 GPT-2 sheet (schema/reference/gpt2-april-2026.yaml), as parsed YAML."""
    return yaml.safe_load((files("atlas.schema") / "reference" / "gpt2-april-2026.yaml").read_text("utf-8"))


def _nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _value(x):
    return None if x is None or _nan(x) else x


def _bar_chart(domains, reference: dict[str, float]) -> dict:
    """Geometry of a horizontal bar chart: one bar per domain, CI whiskers, seed values as ticks."""
    rows = list(domains.to_dict(orient="records"))
    top = max([_value(r["ci_high"]) or r["ppl"] for r in rows] + [reference.get(r["domain"], 0) for r in rows])
    label_w, plot_w, row_h = 290, 420, 26
    scale = plot_w / (top * 1.05)
    bars = []
    for i, r in enumerate(rows):
        lo, hi = _value(r.get("ci_low")), _value(r.get("ci_high"))
        bars.append({
            "y": 10 + i * row_h, "label": r["domain"], "ppl": r["ppl"], "n": r["n"],
            "w": r["ppl"] * scale,
            "lo": None if lo is None else lo * scale,
            "hi": None if hi is None else hi * scale,
            "ref": reference[r["domain"]] * scale if r["domain"] in reference else None,
            "ref_value": reference.get(r["domain"]),
        })
    return {"bars": bars, "x0": label_w, "width": label_w + plot_w + 150, "height": 30 + len(rows) * row_h,
            "has_ref": any(b["ref"] is not None for b in bars)}


def _line_chart(measured: list[dict], seed: list[dict]) -> dict:
    """Geometry of coupling by layer: the measured line with CI whiskers, the seed's line dashed.

    ``measured``: [{layer, coupling, ci_low, ci_high}]; ``seed``: [{layer, coupling}].
    """
    ys = [p["coupling"] for p in measured + seed] + [v for p in measured for v in (p["ci_low"], p["ci_high"])
                                                     if v is not None]
    step = next(s for s in (0.05, 0.1, 0.2, 0.25, 0.5) if (max(ys) - min(ys)) / s <= 5)
    lo, hi = max(-1.0, math.floor(min(ys) / step) * step), min(1.0, math.ceil(max(ys) / step) * step)
    if hi - lo < step:
        lo, hi = max(-1.0, lo - step), min(1.0, hi + step)
    n_layers = max(p["layer"] for p in measured + seed) + 1
    x0, y0, plot_w, plot_h = 50, 12, 560, 220
    x = lambda layer: x0 + (layer + 0.5) * plot_w / n_layers  # noqa: E731
    y = lambda v: y0 + (hi - v) / (hi - lo) * plot_h  # noqa: E731

    def line(points):
        return " ".join(f"{x(p['layer']):.1f},{y(p['coupling']):.1f}" for p in points)

    ticks = [lo + k * step for k in range(round((hi - lo) / step) + 1)]
    return {
        "width": x0 + plot_w + 20, "height": y0 + plot_h + 52, "x0": x0, "y0": y0, "x1": x0 + plot_w,
        "y1": y0 + plot_h,
        "measured": line(measured), "seed": line(seed),
        "points": [{"x": x(p["layer"]), "y": y(p["coupling"]), "layer": p["layer"], "value": p["coupling"],
                    "lo": None if p["ci_low"] is None else y(p["ci_low"]),
                    "hi": None if p["ci_high"] is None else y(p["ci_high"])} for p in measured],
        "seed_points": [{"x": x(p["layer"]), "y": y(p["coupling"]), "layer": p["layer"], "value": p["coupling"]}
                        for p in seed],
        "yticks": [{"y": y(t), "label": f"{t:.2f}"} for t in ticks],
        "xticks": [{"x": x(layer), "label": layer} for layer in range(n_layers)
                   if n_layers <= 16 or layer % max(1, n_layers // 12) == 0],
    }


def _coupling_panel(run: Run, table, seed_rows: list[dict]) -> dict | None:
    """A measured coupling table (variant ``all``) beside the seed's coupling by layer."""
    if table is None or not {"layer", "coupling"} <= set(table.columns):
        return None
    if "variant" in table.columns:
        table = table[table["variant"] == "all"]
    if table.empty:
        return None
    measured = [{"layer": int(r["layer"]), "coupling": float(r["coupling"]),
                 "ci_low": _value(r.get("ci_low")), "ci_high": _value(r.get("ci_high"))}
                for r in table.sort_values("layer").to_dict(orient="records")]
    seed = [{"layer": int(r["layer"]), "coupling": float(r["coupling"]), "note": r.get("interpretation", "")}
            for r in seed_rows]
    by_layer = {p["layer"]: p for p in seed}
    rows = [{**p, "seed": by_layer.get(p["layer"], {}).get("coupling"), "seed_note": by_layer.get(p["layer"], {})
             .get("note", "")} for p in measured]
    rows += [{"layer": s["layer"], "coupling": None, "ci_low": None, "ci_high": None, "seed": s["coupling"],
              "seed_note": s["note"]} for s in seed if s["layer"] not in {p["layer"] for p in measured}]
    return {"run": run, "rows": rows, **_line_chart(measured, seed)}


def _latest_measured(runs: list[Run], instrument: str) -> list[Run]:
    """The newest complete measured run of ``instrument`` per (model, corpus, settings)."""
    latest: dict[tuple, Run] = {}
    for run in runs:
        if run.instrument == instrument and run.status == "complete" and run.provenance != "imported":
            latest[(run.model, run.model_revision, run.corpus_hash, run.settings_hash)] = run
    return list(latest.values())


def _term_links(terms: dict, instruments: set[str]) -> list:
    return [t for t in terms.values() if set(t.instruments) & instruments]


def _context(store: Store) -> dict:
    terms, group_info = vocabulary(), groups()
    all_runs = store.runs()
    runs: dict[str, Run] = {r.id: r for r in all_runs}
    wanted = {"perplexity_domains", "coupling", *(t for t in table_names() if schema_for(t).technician)}
    # per-passage tables can be large and the report does not show them
    tables = {r.id: store.tables(r.id, None if r.provenance == "imported" else wanted)
              for r in all_runs if r.status == "complete"}
    all_verdicts = store.verdicts()
    verdicts = latest_verdicts(all_verdicts)
    history: dict[str, list] = {}
    for v in all_verdicts:
        versions = history.setdefault(v.prediction, [])
        if v.version not in [x["version"] for x in versions]:
            versions.append({"version": v.version, "first": v.created_at, "criterion": v.criterion})

    reference = seed_reference()
    seed_ppl = {row["domain"]: row["ppl"] for row in reference["domain_perplexity"]["rows"]}
    charts = [{"run": run, **_bar_chart(tables[run.id]["perplexity_domains"], seed_ppl)}
              for run in _latest_measured(all_runs, "perplexity") if "perplexity_domains" in tables[run.id]]
    coupling = [panel for run in _latest_measured(all_runs, "coupling")
                if (panel := _coupling_panel(run, tables[run.id].get("coupling"), reference["coupling"]["rows"]))]

    run_terms = {rid: _term_links(terms, {r.instrument}) for rid, r in runs.items()}
    verdict_terms = {v.id: _term_links(terms, {runs[rid].instrument for rid in v.run_ids if rid in runs})
                     for v in all_verdicts}
    technician = {rid: run_fields(store, runs[rid], t) for rid, t in tables.items()}
    technician = {rid: fields for rid, fields in technician.items() if fields}
    interpretations = {v.id: verdict_fields(store, v) for v in verdicts}
    field_terms = {(t, f): spec.get("terms", []) for t in table_names()
                   for f, spec in schema_for(t).technician.items()}

    sessions: dict[str, list] = {}
    for event in store.events():
        sessions.setdefault(event.session, []).append(event)

    term_counts = {tid: {"runs": sum(t in ts for ts in run_terms.values()),
                         "verdicts": sum(t in verdict_terms.get(v.id, []) for v in verdicts)}
                   for tid, t in terms.items()}
    imported = [{"run": r, "tables": tables.get(r.id, {}), "record": r.settings.get("record", {})}
                for r in all_runs if r.provenance == "imported"]
    return dict(
        verdicts=verdicts, all_verdicts=all_verdicts, runs=runs, history=history, charts=charts,
        coupling=coupling, reference=reference, terms=terms, groups=group_info, run_terms=run_terms,
        verdict_terms=verdict_terms, term_counts=term_counts, technician=technician, interpretations=interpretations,
        field_terms=field_terms, sessions=sessions, imported=imported, awaiting=AWAITING, generated=utcnow(),
        db=store.url)


def _term_context(term, ctx: dict) -> dict:
    """What one term's page shows: the runs and verdicts that touch it and the relevant Technician fields
    (every field of a run that touches it, and fields that name it, such as territory for density)."""
    runs = [r for r in ctx["runs"].values() if term in ctx["run_terms"][r.id]]
    touching = {r.id for r in runs}
    technician = []
    for rid, fields in ctx["technician"].items():
        shown = [f for f in fields if rid in touching or term.id in ctx["field_terms"].get((f.table, f.field), ())]
        if shown:
            technician.append((ctx["runs"][rid], shown))
    verdicts = [v for v in ctx["verdicts"] if term in ctx["verdict_terms"].get(v.id, [])]
    return {"term": term, "term_runs": sorted(runs, key=lambda r: r.started_at, reverse=True),
            "term_verdicts": verdicts, "term_technician": technician}


def _write(path: Path, html: str) -> None:
    tmp = path.with_suffix(".html.partial")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)


def render_report(store: Store, out_dir: str | Path) -> Path:
    """Write ``index.html`` and ``terms/<id>.html`` for everything in ``store`` into ``out_dir``;
    returns the index's path."""
    out_dir = Path(out_dir)
    (out_dir / "terms").mkdir(parents=True, exist_ok=True)
    env = Environment(loader=PackageLoader("atlas", "templates"), autoescape=select_autoescape(["j2", "html"]))
    env.filters["num"] = lambda x, d=3: "" if x is None or _nan(x) else f"{x:.{d}g}"
    ctx = _context(store)
    for term in ctx["terms"].values():
        _write(out_dir / "terms" / f"{term.id}.html",
               env.get_template("term.html.j2").render(**ctx, **_term_context(term, ctx), root="../"))
    path = out_dir / "index.html"
    _write(path, env.get_template("index.html.j2").render(**ctx, root=""))
    return path
