"""The HTML verdict report: one self-contained page rendered from the store with Jinja2.

No scripts, no CDN: styles are inline and charts are inline SVG, so the file can
be mailed or archived as it is. Autoescaping is on: claims, reasons and corpus
names are data, never markup.
"""

from __future__ import annotations

import math
from importlib.resources import files
from pathlib import Path

import yaml
from jinja2 import Environment, PackageLoader, select_autoescape

from ._store import Run, Store, utcnow

__all__ = ["render_report", "seed_reference"]


def seed_reference() -> dict:
    """The seed's April 2026 GPT-2 sheet (schema/reference/gpt2-april-2026.yaml)."""
    return yaml.safe_load((files("atlas.schema") / "reference" / "gpt2-april-2026.yaml").read_text("utf-8"))


def _bar_chart(domains, reference: dict[str, float]) -> dict:
    """Geometry of a horizontal bar chart: one bar per domain, CI whiskers, seed values as ticks."""
    rows = list(domains.to_dict(orient="records"))
    top = max([r["ci_high"] if r["ci_high"] is not None and not _nan(r["ci_high"]) else r["ppl"] for r in rows]
              + [reference.get(r["domain"], 0) for r in rows])
    label_w, plot_w, row_h = 220, 420, 26
    scale = plot_w / (top * 1.05)
    bars = []
    for i, r in enumerate(rows):
        lo, hi = r.get("ci_low"), r.get("ci_high")
        bars.append({
            "y": 10 + i * row_h, "label": r["domain"], "ppl": r["ppl"], "n": r["n"],
            "w": r["ppl"] * scale,
            "lo": None if lo is None or _nan(lo) else lo * scale,
            "hi": None if hi is None or _nan(hi) else hi * scale,
            "ref": reference[r["domain"]] * scale if r["domain"] in reference else None,
            "ref_value": reference.get(r["domain"]),
        })
    return {"bars": bars, "x0": label_w, "width": label_w + plot_w + 70, "height": 30 + len(rows) * row_h,
            "has_ref": any(b["ref"] is not None for b in bars)}


def _nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


def render_report(store: Store, out_dir: str | Path) -> Path:
    """Write ``index.html`` for everything in ``store`` into ``out_dir``; returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    verdicts = store.latest_verdicts()
    runs: dict[str, Run] = {r.id: r for r in store.runs()}
    history: dict[str, list] = {}
    for v in store.verdicts():
        versions = history.setdefault(v.prediction, [])
        if v.version not in [x["version"] for x in versions]:
            versions.append({"version": v.version, "first": v.created_at, "criterion": v.criterion})
    reference = seed_reference()
    seed_ppl = {row["domain"]: row["ppl"] for row in reference["domain_perplexity"]}
    latest_ppl: dict[tuple, Run] = {}
    for run in runs.values():
        if run.instrument == "perplexity" and run.status == "complete":
            latest_ppl[(run.model, run.corpus_hash, run.settings.get("bos_policy"))] = run
    charts = [{"run": run, **_bar_chart(store.tables(run.id)["perplexity_domains"], seed_ppl)}
              for run in latest_ppl.values()]
    env = Environment(loader=PackageLoader("atlas", "templates"), autoescape=select_autoescape(["j2", "html"]))
    env.filters["num"] = lambda x, d=3: "" if x is None or _nan(x) else f"{x:.{d}g}"
    html = env.get_template("index.html.j2").render(
        verdicts=verdicts, runs=runs, history=history, charts=charts, reference=reference,
        generated=utcnow(), db=store.url)
    path = out_dir / "index.html"
    tmp = path.with_suffix(".html.partial")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path
