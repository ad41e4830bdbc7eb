"""The HTML verdict report, rendered from the store: ``index.html``, the pages of what grows with every session
(runs, protocol log, criterion versions), one page per Framework term and one per prediction.

No network, no CDN: styles and the one script are inline and figures are inline SVG (geometry from
``atlas._figures``), so the directory can be mailed or archived as it is. The script (``_tables.js.j2``) makes
every ``table.sortable`` sortable by a click on a header and filterable by a box above it; without scripts every
page is whole and in order. Autoescaping is on: claims, reasons, corpus names and judgments are data, never markup.

``index.html`` opens with the overview: the counts of supported, refuted,
inconclusive and not-run verdicts, a forest plot of every verdict reached (effect
and 95% CI against the criterion's threshold, one scale per statistic kind), the
not-run predictions grouped by reason, and the latest verdicts with the corpora
side by side. Then the verdicts in full (terms they touch, Technician
interpretation), a figure per instrument run (domain perplexity and coupling beside
the seed's record, the ablation heatmap, the Hessian spectrum, gradient and entropy
per domain, interpolation curves), imported records, the Framework's vocabulary and
Technician fields (judged or "awaiting Technician"); the store's URL with its password masked. What grows with
every session has pages of its own, each bounded: ``runs.html``, ``runs-2.html``, ... every run's provenance,
newest first, ``RUNS_PER_PAGE`` a page (settings folded, a long value cut); ``log.html``, ``log-2.html``, ... the
CISP protocol log by session, newest first, whole sessions a page (``SESSIONS_PER_PAGE``, ``EVENTS_PER_PAGE``; a
pytest session that did not finish, and its verdicts, marked partial); ``versions.html`` every criterion version.
Each page links to every other page of its list. ``terms/<id>.html`` shows a term: its
definition, formula, citations and flags, what measures it, and the runs, verdicts
and judgments that touch it. ``predictions/<id>.html`` shows every stored verdict of
a prediction over time (version, code version, model, corpus, profile).

Whatever the store holds cannot break the page: every page is written whole (a temporary file of its own,
renamed: reports written at once into one folder all succeed, and a full disk leaves no half page and no
temporary file, only one ``BadInput`` line); any text wraps anywhere (``overflow-wrap: anywhere``, so a
20,000-character id cannot widen a table beyond the page), and every value passes ``bidi_safe`` (a
right-to-left override in a model name is shown, not obeyed; right-to-left text is isolated).
"""

from __future__ import annotations

import hashlib
import math
import re
import tempfile
import unicodedata
from importlib.resources import files
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from ._files import cannot_write, replacing
from ._flips import inconclusive_kind
from ._figures import FIGURES, figures_for, forest, history
from ._judgment import AWAITING, run_fields, verdict_fields
from ._public import public
from ._schema import schema_for, table_names
from ._store import Run, Store, VerdictRecord, latest_verdicts, utcnow
from ._vocabulary import groups, vocabulary
from ._yaml import load_yaml

__all__ = ["bidi_safe", "prediction_page", "render_report", "seed_reference"]


def seed_reference() -> dict:
    """The seed's April 2026 GPT-2 sheet (schema/reference/gpt2-april-2026.yaml), as parsed YAML."""
    return load_yaml((files("atlas.schema") / "reference" / "gpt2-april-2026.yaml").read_text("utf-8"))


def _latest_measured(runs: list[Run], instrument: str) -> list[Run]:
    """The newest complete measured run of ``instrument`` per (model, corpus, settings)."""
    latest: dict[tuple, Run] = {}
    for run in runs:
        if run.instrument == instrument and run.status == "complete" and run.provenance != "imported":
            latest[(run.model, run.model_revision, run.corpus_hash, run.settings_hash)] = run
    return list(latest.values())


def _term_links(terms: dict, instruments: set[str]) -> list:
    return [t for t in terms.values() if set(t.instruments) & instruments]


def prediction_page(prediction: str) -> str:
    """The file name of a prediction's history page under ``predictions/``: its id with anything but letters,
    digits, ``.``, ``_`` and ``-`` replaced by ``_``; a long id cut to 80 characters and the start of its hash
    (a file name holds at most 255 bytes).

    >>> prediction_page("P5d/seeds")
    'P5d_seeds.html'
    """
    name = re.sub(r"[^A-Za-z0-9._-]", "_", prediction)
    if len(name) > 100:
        name = f"{name[:80]}-{hashlib.sha256(prediction.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"
    return name + ".html"


#: the most runs on one page of runs (``runs.html``, ``runs-2.html``, ...), newest first
RUNS_PER_PAGE = 100
#: a page of the protocol log (``log.html``, ``log-2.html``, ...) holds whole sessions, newest first: at most this
#: many sessions, and at most ``EVENTS_PER_PAGE`` events unless one session alone has more
SESSIONS_PER_PAGE = 20
EVENTS_PER_PAGE = 600


def page_name(stem: str, number: int) -> str:
    """The file of page ``number`` (from 1) of a paginated list: ``stem.html``, then ``stem-2.html``, ...

    >>> page_name("log", 1), page_name("log", 3)
    ('log.html', 'log-3.html')
    """
    return f"{stem}.html" if number == 1 else f"{stem}-{number}.html"


def paginate(items: list, size=lambda item: 1, most_items: int = RUNS_PER_PAGE, most_size: int | None = None
             ) -> list[list]:
    """``items`` cut in order into pages of at most ``most_items`` items and, unless one item alone is larger,
    ``most_size`` in all (``size`` of each item); always one page at least (an empty one for no items).

    >>> paginate(list(range(5)), most_items=2)
    [[0, 1], [2, 3], [4]]
    >>> paginate([3, 1, 5, 1], size=lambda n: n, most_items=9, most_size=4)
    [[3, 1], [5], [1]]
    """
    pages: list[list] = [[]]
    total = 0
    for item in items:
        if pages[-1] and (len(pages[-1]) >= most_items or (most_size is not None and total + size(item) > most_size)):
            pages.append([])
            total = 0
        pages[-1].append(item)
        total += size(item)
    return pages


def _pager(stem: str, count: int, number: int) -> dict:
    """What a page's pager shows: every page of the list (its number and file), this one marked."""
    return {"number": number, "count": count, "pages": [(k, page_name(stem, k)) for k in range(1, count + 1)],
            "newer": page_name(stem, number - 1) if number > 1 else None,
            "older": page_name(stem, number + 1) if number < count else None}


def _verdict_data(v: VerdictRecord, root: str = "") -> dict:
    """What the verdict figures read from a verdict (see ``_figures.forest``)."""
    return {"id": v.id, "prediction": v.prediction, "version": v.version, "model": v.model, "corpus": v.corpus,
            "profile": v.profile, "outcome": v.outcome, "effect": v.effect, "ci_low": v.ci_low,
            "ci_high": v.ci_high, "n": v.n, "criterion": v.criterion, "created_at": v.created_at,
            "href": f"{root}predictions/{prediction_page(v.prediction)}"}


def _by_corpus(verdicts: list[VerdictRecord]) -> dict:
    """The latest verdicts as a matrix: one row per (prediction, version, model, profile), one column per
    corpus (name and hash), so that a prediction's verdicts on different corpora stand side by side."""
    columns = list(dict.fromkeys((v.corpus, v.corpus_hash) for v in verdicts))
    rows: dict[tuple, dict] = {}
    for v in verdicts:
        row = rows.setdefault((v.prediction, v.version, v.model, v.profile), {"first": v, "cells": {}})
        row["cells"][(v.corpus, v.corpus_hash)] = v
    return {"columns": columns, "rows": list(rows.values())}


def _not_run(verdicts: list[VerdictRecord]) -> list[dict]:
    """Not-run verdicts grouped by their reason (usually: which model is missing): the predictions, models
    and corpora of each reason, each named once."""
    grouped: dict[str, list[VerdictRecord]] = {}
    for v in verdicts:
        if v.outcome == "not_run":
            grouped.setdefault(v.reason, []).append(v)
    return [{"reason": reason, "predictions": list(dict.fromkeys(v.prediction for v in vs)),
             "models": list(dict.fromkeys(v.model for v in vs)),
             "corpora": list(dict.fromkeys(v.corpus or "—" for v in vs))} for reason, vs in grouped.items()]


def _figures_of(run: Run, tables: dict, reference: dict) -> list[dict]:
    """The figures of one stored run's tables (none for a run that is not complete)."""
    labels = {"model": run.model, "corpus": run.corpus, "corpus_hash": run.corpus_hash, "run": run.id,
              "settings": run.settings}
    return figures_for(tables[run.id], labels, reference) if run.id in tables else []


def _figure_sections(all_runs: list[Run], tables: dict, reference: dict) -> dict[str, list]:
    """Per instrument (in the order figures are registered): its newest measured runs and their figures."""
    sections: dict[str, list] = {schema_for(fig.tables[0]).instrument: [] for fig in FIGURES.values()}
    for instrument, items in sections.items():
        for run in _latest_measured(all_runs, instrument):
            figs = _figures_of(run, tables, reference)
            if figs:
                items.append({"run": run, "figures": figs})
    return sections


def _context(store: Store) -> dict:
    terms, group_info = vocabulary(), groups()
    all_runs = store.runs()
    runs: dict[str, Run] = {r.id: r for r in all_runs}
    wanted = {t for fig in FIGURES.values() for t in fig.tables} | {
        t for t in table_names() if schema_for(t).technician}
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
    counts = {o: sum(v.outcome == o for v in verdicts)
              for o in ("supported", "refuted", "inconclusive", "no_effect", "not_run", "error")}

    reference = seed_reference()
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
    newest_runs = sorted(all_runs, key=lambda r: r.started_at, reverse=True)
    run_pages = paginate(newest_runs, most_items=RUNS_PER_PAGE)
    log_pages = paginate(list(sessions.items())[::-1], size=lambda s: len(s[1]), most_items=SESSIONS_PER_PAGE,
                         most_size=EVENTS_PER_PAGE)
    complete = store.complete_sessions()  # verdicts of any other pytest session are partial (it was killed)
    partial_sessions = {v.session for v in all_verdicts if v.session and v.session not in complete}

    term_counts = {tid: {"runs": sum(t in ts for ts in run_terms.values()),
                         "verdicts": sum(t in verdict_terms.get(v.id, []) for v in verdicts)}
                   for tid, t in terms.items()}
    imported = [{"run": r, "tables": tables.get(r.id, {}), "record": r.settings.get("record", {})}
                for r in all_runs if r.provenance == "imported"]
    return dict(
        verdicts=verdicts, reached=[v for v in verdicts if v.outcome != "not_run"], counts=counts,
        forest=forest([_verdict_data(v) for v in verdicts]), not_run=_not_run(verdicts),
        by_corpus=_by_corpus(verdicts), all_verdicts=all_verdicts, runs=runs, history=history,
        sections=_figure_sections(all_runs, tables, reference), reference=reference, terms=terms,
        evidence_figures={rid: _figures_of(runs[rid], tables, reference)  # what each latest verdict read, drawn
                          for v in verdicts for rid in v.run_ids if rid in runs},
        groups=group_info, run_terms=run_terms, verdict_terms=verdict_terms, term_counts=term_counts,
        technician=technician, interpretations=interpretations, field_terms=field_terms, sessions=sessions,
        imported=imported, awaiting=AWAITING, generated=utcnow(), db=store.shown_url,
        holm=store.adjustments(), calibrations=store.calibrations(), partial_sessions=partial_sessions,
        run_pages=run_pages, log_pages=log_pages,
        run_page={r.id: page_name("runs", k) for k, page in enumerate(run_pages, 1) for r in page},
        verification=store.verify())  # the store's verification state (atlas verify), at the top of the index


def _prediction_context(prediction: str, ctx: dict) -> dict:
    """What a prediction's page shows: every stored verdict of it, oldest first, their history figures, and the
    evidence of the latest verdict on each model, corpus and profile: as tables, and the figures of the runs it
    read."""
    verdicts = [v for v in ctx["all_verdicts"] if v.prediction == prediction]
    latest = {(v.model, v.corpus_hash, v.profile): v for v in verdicts}.values()
    return {"prediction": prediction, "prediction_verdicts": verdicts, "latest": verdicts[-1],
            "versions": ctx["history"][prediction],
            "history_figures": history([_verdict_data(v, "../") for v in verdicts]),
            "evidence": [(v, evidence_tables(v.evidence),
                          [f for rid in v.run_ids for f in ctx["evidence_figures"].get(rid, [])]) for v in latest
                         if v.evidence or v.run_ids]}


def evidence_tables(evidence: dict) -> list[dict]:
    """A verdict's stored evidence (whatever JSON its body concluded with) as tables: one of its single values
    (name, value), and one per entry that holds rows -- a mapping of mappings (a row per key, e.g. per seed) or
    a list of mappings -- or a list of values (one row). ``{"title", "headers", "rows"}`` each."""
    scalars = [(k, v) for k, v in evidence.items() if not isinstance(v, (dict, list))]
    tables = [{"title": "values", "headers": ("name", "value"), "rows": scalars}] if scalars else []
    for name, value in evidence.items():
        if isinstance(value, dict) and value and all(isinstance(r, dict) for r in value.values()):
            columns = list(dict.fromkeys(c for r in value.values() for c in r))
            tables.append({"title": name, "headers": ("", *columns),
                           "rows": [(key, *(row.get(c) for c in columns)) for key, row in value.items()]})
        elif isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            columns = list(dict.fromkeys(c for r in value for c in r))
            tables.append({"title": name, "headers": tuple(columns),
                           "rows": [tuple(r.get(c) for c in columns) for r in value]})
        elif isinstance(value, dict):
            tables.append({"title": name, "headers": ("name", "value"), "rows": list(value.items())})
        elif isinstance(value, list):
            tables.append({"title": name, "headers": tuple(range(len(value))), "rows": [tuple(value)]})
    return tables


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


#: what to do when the report cannot be written
_FIX = "free some space or choose another folder (atlas report --out DIR, pytest --atlas-reports DIR)"
#: the explicit bidirectional formatting characters (embeddings, overrides, isolates): each opens or closes a scope
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


def bidi_safe(value):
    """What the report shows of a value (Jinja's ``finalize``, so every ``{{ ... }}`` of the report and its
    figures): a string's explicit bidirectional controls shown as text (``<U+202E>``: an override in a model
    name neither reverses what follows it nor hides itself), and a string with right-to-left letters isolated
    (FIRST STRONG ISOLATE ... POP DIRECTIONAL ISOLATE, the characters of ``<bdi>``), so that it cannot reorder
    the text around it. Anything else, markup the templates made included, is shown as it is.

    >>> bidi_safe("gpt\u202e2")
    'gpt<U+202E>2'
    >>> bidi_safe("\u05e9\u05dc\u05d5\u05dd") == "\u2068\u05e9\u05dc\u05d5\u05dd\u2069"
    True
    """
    if not isinstance(value, str) or isinstance(value, Markup):  # numbers, dates, the templates' own macros
        return value
    value = _BIDI_CONTROLS.sub(lambda m: f"<U+{ord(m[0]):04X}>", value)
    rtl = any(unicodedata.bidirectional(c) in ("R", "AL") for c in value)
    return f"\u2068{value}\u2069" if rtl else value


def _clip(value, most: int = 200) -> str:
    """A value's text, cut after ``most`` characters with how many more there are (a Lab recipe's notes in a
    run's settings): the page stays bounded, the value in full is in the store (``atlas export RUN``).

    >>> _clip("x" * 250)[195:]
    'xxxxx… (50 more characters)'
    """
    text = str(value)
    return text if len(text) <= most else f"{text[:most]}… ({len(text) - most:,} more characters)"


def _write(out_dir: Path, name: str, html: str) -> Path:
    """Write one page whole (``atlas._files.replacing``); a full disk or an unwritable folder is one ``BadInput``."""
    path = out_dir / name
    try:
        with replacing(path) as tmp:
            tmp.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise cannot_write("the report", out_dir, exc, _FIX) from None
    return path


def render_report(store: Store, out_dir: str | Path) -> Path:
    """Write ``index.html`` (the overview: verdicts, records), ``figures.html`` (each instrument's newest runs,
    drawn), the pages of what grows with every session (``runs*.html``, ``log*.html``, ``versions.html``), ``terms/<id>.html`` and ``predictions/<id>.html`` for
    everything in ``store`` into ``out_dir``; returns the index's path. Each page is written whole, so reports written
    at once into one folder do not mix; a folder that cannot be written, or a full disk, is one ``BadInput`` naming
    it."""
    out_dir = Path(out_dir)
    try:
        for sub in ("terms", "predictions"):
            (out_dir / sub).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):  # writable, before anything is read
            pass
    except OSError as exc:
        raise cannot_write("the report", out_dir, exc, _FIX) from None
    env = Environment(loader=PackageLoader("atlas", "templates"), autoescape=select_autoescape(["j2", "html"]),
                      finalize=bidi_safe)
    env.filters["num"] = lambda x, d=3: "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}g}"
    env.filters["page"] = prediction_page
    env.filters["clip"] = _clip
    env.filters["inconclusive_kind"] = lambda v: inconclusive_kind(v.effect, v.ci_low, v.ci_high)
    ctx = _context(store)
    for term in ctx["terms"].values():
        _write(out_dir, f"terms/{term.id}.html",
               env.get_template("term.html.j2").render(**ctx, **_term_context(term, ctx), root="../"))
    for prediction in ctx["history"]:
        _write(out_dir, f"predictions/{prediction_page(prediction)}",
               env.get_template("prediction.html.j2").render(**ctx, **_prediction_context(prediction, ctx),
                                                              root="../"))
    for k, page in enumerate(ctx["run_pages"], 1):
        _write(out_dir, page_name("runs", k), env.get_template("runs.html.j2").render(
            **ctx, page_runs=page, pager=_pager("runs", len(ctx["run_pages"]), k), root=""))
    for k, page in enumerate(ctx["log_pages"], 1):
        _write(out_dir, page_name("log", k), env.get_template("log.html.j2").render(
            **ctx, page_sessions=page, pager=_pager("log", len(ctx["log_pages"]), k), root=""))
    _write(out_dir, "versions.html", env.get_template("versions.html.j2").render(**ctx, root=""))
    _write(out_dir, "figures.html", env.get_template("figures.html.j2").render(**ctx, root=""))
    return _write(out_dir, "index.html", env.get_template("index.html.j2").render(**ctx, root=""))


public("atlas", render_report)
