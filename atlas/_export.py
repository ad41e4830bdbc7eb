"""Export stored tables with their provenance, so that results go to pandas, R or a paper.

A run is written to ``DIR/<run id>/``: one file per table (``<table>.csv``, ``.json`` or
``.parquet``) and ``provenance.json``, the sidecar that says where the numbers come from:
the run's instrument and version, model and revision, corpus and content hash, settings,
device, dtype, seed, package versions, git commit, start and end, status, and per table its
file, row count and a description of every column (``schema/<table>.yaml``). Every table
starts with the columns ``KEYS`` (``run_id``, ``instrument``, ``model``, ``corpus``,
``profile``), so tables of several runs concatenate and join without the sidecar. A
prediction is exported as the runs its latest verdicts used, each as above, and
``DIR/<prediction>.verdicts.json`` with those verdicts (``atlas verdicts --json`` records).

Every file is written whole (a temporary file of this process, renamed); a full disk or a folder that
cannot be written is one ``BadInput`` line.

Formats: ``csv`` (header row, missing values empty), ``json`` (a list of row objects,
missing values null), ``parquet`` (column types kept; needs pyarrow, the ``export`` extra).
"""

from __future__ import annotations

import difflib
import importlib.util
import json
from pathlib import Path

from ._errors import ExportError
from ._files import cannot_write, replacing
from ._flips import verdict_json
from ._jsonsafe import json_safe
from ._report import prediction_page
from ._schema import schema_for, table_names
from ._store import Run, Store

__all__ = ["FORMATS", "KEYS", "export_prediction", "export_run"]

FORMATS = ("csv", "json", "parquet")


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ExportError("parquet export needs pyarrow: pip install 'atlas-landscape[export]' "
                          "(or use --format csv or json)")


#: the columns an export puts before a table's own, so that tables of several runs join without provenance.json
KEYS = {"run_id": "the run that measured the row (atlas runs; provenance.json holds the rest of its provenance)",
        "instrument": "the instrument of the run", "model": "the model measured (a registry name, hub id, "
        "checkpoint folder or Lab run)", "corpus": "the corpus as sampled, name[:N/domain] (N: the profile's "
        "passages per domain)", "profile": "the profile of the verdicts that used the run (in a prediction's "
        "export; empty in a run's)"}


def _columns(table: str) -> dict[str, str]:
    own = ({name: spec.get("description", "") for name, spec in schema_for(table).columns.items()}
           if table in table_names() else {})
    return {**KEYS, **own}


def _keyed(df, run: Run, profile: str):
    """``df`` with the ``KEYS`` columns in front, each one value for the whole run."""
    keys = {"run_id": run.id, "instrument": run.instrument, "model": run.model, "corpus": run.corpus,
            "profile": profile}
    return df.assign(**keys)[[*keys, *(c for c in df.columns if c not in keys)]]


def _write_table(df, path: Path, fmt: str) -> None:
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "json":
        rows = json_safe(df.to_dict(orient="records"))
        path.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    else:
        df.to_parquet(path, index=False)


def _written(path: Path, write) -> Path:
    """``write(tmp)`` into a temporary file of this process, renamed onto ``path`` (``atlas._files.replacing``);
    a full disk or an unwritable folder is one ``BadInput`` naming the folder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as tmp:
            write(tmp)
    except OSError as exc:
        raise cannot_write("the export", path.parent, exc, "free some space or choose another folder (--out DIR)") \
            from None
    return path


def export_run(store: Store, run: Run, out_dir: str | Path, fmt: str = "csv",
               tables: tuple[str, ...] | None = None, profile: str = "") -> list[Path]:
    """Write ``run``'s tables (all, or those named), each with the ``KEYS`` columns in front, and its provenance
    sidecar; returns the paths written. ``profile``: of the verdicts the run is exported for."""
    _check_format(fmt)
    stored = store.tables(run.id, set(tables) if tables else None)
    missing = sorted(set(tables or ()) - set(stored))
    if missing:
        raise ExportError(f"run {run.id[:12]} ({run.instrument}) has no table {', '.join(missing)}; "
                          f"it has {', '.join(sorted(store.tables(run.id))) or 'none'}")
    if not stored:
        raise ExportError(f"run {run.id[:12]} ({run.instrument}, {run.status}) stored no tables")
    where = Path(out_dir) / run.id
    written, described = [], {}
    for name, df in stored.items():
        df = _keyed(df, run, profile)
        path = _written(where / f"{name}.{fmt}", lambda tmp, df=df: _write_table(df, tmp, fmt))
        written.append(path)
        described[name] = {"file": path.name, "rows": len(df), "columns": _columns(name)}
    provenance = json.dumps(json_safe({"run": {k: getattr(run, k) for k in Run.model_fields}, "tables": described}),
                            indent=1) + "\n"
    sidecar = _written(where / "provenance.json", lambda tmp: tmp.write_text(provenance, encoding="utf-8"))
    return [*written, sidecar]


def _prediction(store: Store, ref: str) -> str:
    """The stored prediction id ``ref`` names: itself, or the one it is the start of (``P5d``)."""
    known = sorted({v.prediction for v in store.verdicts()})
    if ref in known:
        return ref
    starting = [p for p in known if p.startswith(ref)]
    if len(starting) == 1:
        return starting[0]
    if starting:
        raise ExportError(f"{ref!r} is the start of {len(starting)} predictions ({', '.join(starting)}): give more")
    close = difflib.get_close_matches(ref, known, n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; stored: {', '.join(known) or 'none'}"
    raise ExportError(f"no verdict of prediction {ref!r} in the store{hint}")


def export_prediction(store: Store, prediction: str, out_dir: str | Path, fmt: str = "csv") -> list[Path]:
    """Write the runs of ``prediction``'s latest verdicts (``prediction``: an id or its start, e.g. ``P5d``)
    and the verdicts themselves; returns the paths written."""
    _check_format(fmt)
    prediction = _prediction(store, prediction)
    latest = [v for v in store.latest_verdicts() if v.prediction == prediction]
    run_ids = list(dict.fromkeys(rid for v in latest for rid in v.run_ids))
    runs = [r for r in (store.run(rid) for rid in run_ids) if r is not None]
    if not runs:
        raise ExportError(f"the verdicts of {prediction} used no stored run (outcomes: "
                          f"{', '.join(sorted({v.outcome for v in latest}))})")
    profiles = {rid: ", ".join(sorted({v.profile for v in latest if rid in v.run_ids})) for rid in run_ids}
    written = [p for run in runs for p in export_run(store, run, out_dir, fmt, profile=profiles[run.id])]
    adjustments = store.adjustments()
    text = json.dumps({"verdicts": [verdict_json(v, adjustments.get(v.id)) for v in latest]}, indent=1) + "\n"
    path = _written(Path(out_dir) / prediction_page(prediction).replace(".html", ".verdicts.json"),
                    lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return [*written, path]
