"""Transcription: measurements taken elsewhere, imported as runs with provenance ``imported``.

A sheet is validated against the same schema as measured tables and stored as one
run per table (instrument = the table's instrument, corpus ``imported:<source>``,
corpus_hash = the sheet's content hash, settings = where it came from, its caveats
and notes). Human calls in it (a domain's territory, a layer's interpretation) are
the sheet author's Technician judgments, never computed fields. A malformed sheet
is refused as a whole with row-level errors; importing the same sheet twice is a
no-op, even when two processes import it at the same moment (a run's id is derived
from the sheet's content hash, so the second write meets the first one's key).
YAML aliases (``&a`` ... ``*a``) are refused before anything is expanded or hashed:
a sheet is data written out, and nested aliases can expand a few hundred bytes into
gigabytes. A file that is not UTF-8 text is refused with one error.

**YAML or JSON sheet** (``schema/reference/gpt2-april-2026.yaml`` is one)::

    record:                            # about the whole sheet; kept in each run's settings
      source: measurements-gpt2-april-2026   # required: where the numbers come from
      model: gpt2                      # required
      judged_by: seed sheet April 2026 # who made its Technician calls (default: source)
      date: April 2026
      caveats: ["ONE UN-REPLICATED FIRST-PASS RUN ..."]
      # model_revision, runtime (the device), dtype and anything else are kept too
    domain_perplexity:                 # one section per table
      table: perplexity_domains        # default: the section's name
      note: "..."                      # kept in the run's settings
      defaults: {n: 5}                 # column values every row shares
      rows:
        - {domain: poetry, ppl: 58.6, territory: elevated, territory_note: "...", label: Poetry, note: "..."}

A row holds the schema's columns (nullable ones may be left out), the table's
Technician fields (with ``<field>_note``), and free ``label`` / ``note`` text.

**CSV**: one table, a header row, one row per line; ``--table`` (inferred from
the header when only one table fits), ``--model`` and ``--source`` give what the
record would; ``--default COLUMN=VALUE`` fills a column for every row.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from importlib import metadata
from importlib.resources import files
from pathlib import Path

import pandas as pd
import yaml
from sqlalchemy.exc import IntegrityError

from ._jsonsafe import json_safe
from ._provenance import content_hash, settings_hash
from ._errors import BadInput, JudgmentError, SchemaViolation, SheetError
from ._judgment import _key, allowed_value
from ._public import public
from ._schema import TableSchema, schema_for, table_names, validate_table
from ._store import Judgment, Run, Store, utcnow
from ._yaml import load_yaml, problem_line

__all__ = ["ImportResult", "Sheet", "import_sheet", "load_sheet", "reference_names",
           "reference_sheet"]

_SECTION_KEYS = {"table", "note", "defaults", "rows"}
_FREE = ("label", "note")
_EXTRA = "\0extra"  # where csv puts cells beyond the header


@dataclass
class Sheet:
    name: str  # a file name or reference id, for messages and provenance
    data: dict  # {"record": {...}, section: {"table", "note", "defaults", "rows"}, ...}
    text: bool = False  # values are CSV text, to be parsed by column type
    lines: list[int] | None = None  # CSV: the line each row starts on (rows are then named by line)

    @property
    def hash(self) -> str:
        """The content hash (``atlas._provenance.content_hash``): equal for equal content, whatever the file's
        name, comments or layout."""
        try:
            return content_hash(self.data)
        except ValueError:  # NaN or ±inf outside the tables' cells (where _sections names them)
            raise SheetError(self.name, ["holds NaN or an infinite number, which has no JSON form; write it "
                                         "as text"]) from None


@dataclass
class ImportResult:
    sheet: str
    hash: str
    runs: list[Run] = field(default_factory=list)
    tables: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)  # run id -> its tables
    judgments: list[Judgment] = field(default_factory=list)
    already: bool = False  # the same content was imported before: nothing was written


# --- reading ------------------------------------------------------------------------------------

def reference_names() -> list[str]:
    """The bundled reference sheets (``schema/reference/*.yaml``)."""
    return sorted(p.name.removesuffix(".yaml") for p in (files("atlas.schema") / "reference").iterdir()
                  if p.name.endswith(".yaml"))


def reference_sheet(name: str) -> Sheet:
    """A bundled reference sheet by name, e.g. ``gpt2-april-2026`` (the seed's record)."""
    path = files("atlas.schema") / "reference" / f"{name}.yaml"
    if not path.is_file():
        raise SheetError(name, [f"no reference sheet {name!r}; bundled: {', '.join(reference_names())}"])
    return Sheet(f"reference:{name}", load_yaml(path.read_text(encoding="utf-8")))


def load_sheet(path: str | Path, *, table: str | None = None, model: str | None = None,
               source: str | None = None, judged_by: str | None = None, date: str | None = None,
               caveats: tuple[str, ...] = (), defaults: dict[str, str] | None = None) -> Sheet:
    """Read a YAML/JSON sheet, or a CSV table whose record is given by the keyword arguments."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SheetError(path.name, [f"not UTF-8 text (byte {exc.start}): a sheet is a YAML, JSON or CSV text "
                                     "file; re-save it as UTF-8"]) from None
    if "\0" in text:
        raise SheetError(path.name, ["holds NUL bytes: a sheet is a YAML, JSON or CSV text file, not a binary one"])
    if path.suffix.lower() != ".csv":
        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else load_yaml(text)
        except json.JSONDecodeError as exc:
            raise SheetError(path.name, [f"not valid JSON: {exc}"]) from None
        except yaml.YAMLError as exc:
            raise SheetError(path.name, [f"not valid YAML: {problem_line(exc)}"]) from None
        except RecursionError:
            raise SheetError(path.name, ["nested too deeply to be a sheet (a record and table sections)"]) from None
        return Sheet(path.name, data)
    reader = csv.DictReader(io.StringIO(text), restkey=_EXTRA)
    header = [h.strip() for h in reader.fieldnames or []]
    if not header or not any(header):
        raise SheetError(path.name, ["line 1: no header row"])
    rows, lines, errors, line = [], [], [], reader.line_num + 1
    for raw in reader:
        if _EXTRA in raw:
            errors.append(f"line {line}: {len(raw[_EXTRA])} more cell(s) than the header has columns")
        rows.append({k.strip(): v for k, v in raw.items() if k != _EXTRA and v is not None})
        lines.append(line)
        line = reader.line_num + 1
    if not model or not source:
        errors.append("a CSV carries no record: give the model and the source (--model, --source)")
    if errors:
        raise SheetError(path.name, errors)
    defaults = dict(defaults or {})
    record = {k: v for k, v in {"source": source, "model": model, "judged_by": judged_by, "date": date,
                                "caveats": list(caveats)}.items() if v}
    table = table or _infer_table(path.name, header, defaults)
    return Sheet(path.name, {"record": record, table: {"table": table, "defaults": defaults, "rows": rows}},
                 text=True, lines=lines)


def _allowed_columns(schema: TableSchema) -> set[str]:
    return {*schema.columns, *schema.technician, *(f"{f}_note" for f in schema.technician), *_FREE}


def _infer_table(name: str, header: list[str], defaults: dict) -> str:
    """The one table whose columns the CSV header (with the defaults) fits."""
    given = set(header) | set(defaults)
    fits = [t for t in table_names()
            if given <= _allowed_columns(schema_for(t))
            and {c for c, spec in schema_for(t).columns.items() if not spec.get("nullable")} <= given]
    if len(fits) == 1:
        return fits[0]
    raise SheetError(name, [f"line 1: say which table the CSV holds with --table; "
                            f"{'several fit: ' + ', '.join(fits) if fits else 'no table has these columns'}"])


# --- checking -----------------------------------------------------------------------------------

def _coerce(value, spec: dict, text: bool):
    """A cell as the column's type; ``ValueError`` saying what was wrong. None: empty."""
    kind = spec["type"]
    if isinstance(value, str) and text:
        value = value.strip()
        if not value:
            return None
    if value is None:
        return None
    if kind == "str":
        if isinstance(value, str):
            return value
        raise ValueError(f"expected text, got {value!r}")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if text and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(f"expected true or false, got {value!r}")
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if text:
        try:
            value = int(value) if kind == "int" else float(value)
        except ValueError:
            raise ValueError(f"expected {'an integer' if kind == 'int' else 'a number'}, got {value!r}") from None
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int):
            return value
        raise ValueError(f"expected an integer, got {value!r}")
    if not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def _check(value, spec: dict) -> str | None:
    """What is wrong with a typed, non-empty cell against the column's range and allowed values."""
    if "min" in spec and value < spec["min"]:
        return f"{value!r} is below the minimum {spec['min']}"
    if "max" in spec and value > spec["max"]:
        return f"{value!r} is above the maximum {spec['max']}"
    if "values" in spec and value not in spec["values"]:
        return f"{value!r} is not one of {spec['values']}"
    return None


@dataclass
class _Section:
    name: str
    schema: TableSchema
    frame: pd.DataFrame
    judgments: list[dict]  # Judgment fields without the target
    settings: dict


def _rows(sheet: Sheet, name: str, schema: TableSchema, defaults: dict, raw_rows: list,
          errors: list[str]) -> _Section | None:
    """Check every row of one section; append one error per (row, column) problem."""
    before = len(errors)
    where = (lambda i: f"line {sheet.lines[i]}") if sheet.lines else (lambda i: f"{name} row {i + 1}")
    rows, judgments, labels, notes = [], [], {}, {}
    allowed = _allowed_columns(schema)
    for i, raw in enumerate(raw_rows):
        if not isinstance(raw, dict):
            errors.append(f"{where(i)}: expected a mapping of column -> value, not {raw!r}")
            continue
        values = {**defaults, **raw}
        for column in values:
            if column not in allowed:
                errors.append(f"{where(i)}, column {column!r}: not a column of schema/{schema.table}.yaml "
                              f"(columns: {', '.join(schema.columns)}) nor a Technician field of it")
        row = {}
        for column, spec in schema.columns.items():
            try:
                value = _coerce(values.get(column), spec, sheet.text)
            except ValueError as exc:
                errors.append(f"{where(i)}, column {column!r}: {exc}")
                continue
            problem = (("missing: the column is required" if not spec.get("nullable") else None)
                       if value is None else _check(value, spec))
            if problem:
                errors.append(f"{where(i)}, column {column!r}: {problem}")
            row[column] = value
        rows.append(row)
        key = "/".join(_key(row.get(c)) for c in schema.key) if schema.key else str(i)
        for fname, spec in schema.technician.items():
            value = values.get(fname)
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            column = schema.judgment_row(fname)
            try:
                if column is None:
                    raise JudgmentError(f"Technician field {fname!r} is judged per table, not per row")
                value = allowed_value(spec, value, field_name=fname)
            except JudgmentError as exc:
                errors.append(f"{where(i)}, column {fname!r}: {exc}")
                continue
            judgments.append({"table_name": schema.table, "row_key": _key(row.get(column)), "field": fname,
                              "value": value, "note": str(values.get(f"{fname}_note") or "")})
        for free, kept in (("label", labels), ("note", notes)):
            if values.get(free) not in (None, ""):
                kept[key] = str(values[free])
    if len(errors) > before:
        return None
    frame = _frame(schema, rows)
    try:
        validate_table(schema.table, frame)
    except SchemaViolation as exc:  # what only the whole table shows: duplicate keys, ordered pairs
        for expectation, column, bad in exc.failures:
            if bad is None or not len(bad):
                errors.append(f"{name}: {expectation} on {column}")
            for i in ([] if bad is None else bad.index):
                errors.append(f"{where(int(i))}, column {column}: fails {expectation}")
        return None
    return _Section(name, schema, frame, judgments, {"labels": labels, "row_notes": notes})


def _frame(schema: TableSchema, rows: list[dict]) -> pd.DataFrame:
    """The rows as the dtypes measured tables have: NaN for missing floats, Python ints and None otherwise."""
    columns = {}
    for column, spec in schema.columns.items():
        values = [r[column] for r in rows]
        if spec["type"] == "float":
            columns[column] = pd.Series([math.nan if v is None else v for v in values], dtype="float64")
        elif spec["type"] == "str" or any(v is None for v in values):
            columns[column] = pd.Series(values, dtype=object)
        else:
            columns[column] = pd.Series(values)
    return pd.DataFrame(columns)


def _sections(sheet: Sheet) -> tuple[dict, list[_Section]]:
    """The record and every section, checked; ``SheetError`` with every problem found."""
    data, errors = sheet.data, []
    if not isinstance(data, dict):
        raise SheetError(sheet.name, ["the sheet must be a mapping: a `record` and one section per table"])
    record = data.get("record")
    if not isinstance(record, dict):
        errors.append("record: missing (a mapping with at least `source` and `model`)")
        record = {}
    for name in ("source", "model"):
        if not isinstance(record.get(name), str) or not record[name].strip():
            errors.append(f"record, field {name!r}: missing or empty")
    caveats = record.get("caveats", [])
    if not isinstance(caveats, list) or not all(isinstance(c, str) for c in caveats):
        errors.append("record, field 'caveats': must be a list of strings")
    sections, tables = [], {}
    if not any(k != "record" for k in data):
        errors.append("no table sections: add one, e.g. `domain_perplexity: {table: perplexity_domains, rows: [...]}`")
    for name, section in data.items():
        if name == "record":
            continue
        if not isinstance(section, dict) or not isinstance(section.get("rows"), list) or not section["rows"]:
            errors.append(f"{name}: a section needs a non-empty `rows` list")
            continue
        unknown = sorted(set(section) - _SECTION_KEYS)
        if unknown:
            errors.append(f"{name}: unknown key(s) {unknown}; a section has {sorted(_SECTION_KEYS)}")
        table = section.get("table", name)
        try:
            schema = schema_for(table)
        except (BadInput, TypeError):
            errors.append(f"{name}: no table {table!r} (tables: {', '.join(table_names())})")
            continue
        if table in tables:
            errors.append(f"{name}: table {table!r} is already given by section {tables[table]!r}")
            continue
        tables[table] = name
        defaults = section.get("defaults") or {}
        if not isinstance(defaults, dict) or not set(defaults) <= set(schema.columns):
            errors.append(f"{name}: `defaults` must map columns of {table!r} to values")
            continue
        checked = _rows(sheet, name, schema, defaults, section["rows"], errors)
        if checked is not None:
            checked.settings.update(note=" ".join(str(section.get("note", "")).split()), defaults=defaults)
            sections.append(checked)
    if errors:
        raise SheetError(sheet.name, errors)
    return record, sections


# --- storing ------------------------------------------------------------------------------------

def import_sheet(store: Store, sheet: Sheet) -> ImportResult:
    """Validate ``sheet`` and store it as runs (one per table) with its Technician judgments, in one
    transaction; a sheet whose content was imported before is not stored again (``already``).

    Each run's id is derived from the content hash and its section, so when two processes import the same
    sheet at once, the slower one's write meets the stored key, is rolled back whole, and reports
    ``already`` like any repeat import."""
    record, sections = _sections(sheet)
    digest = sheet.hash
    prior = store.runs(provenance="imported", corpus_hash=digest)
    if prior:
        return ImportResult(sheet.name, digest, runs=prior, already=True)
    record = json_safe(record, lenient=True)  # dates as ISO 8601 text, YAML's other types as text
    by = str(record.get("judged_by") or record["source"])
    now, result = utcnow(), ImportResult(sheet.name, digest)
    written = []
    for section in sections:
        settings = {"imported_from": sheet.name, "section": section.name, "record": record,
                    **{k: v for k, v in section.settings.items() if v}}
        run_id = hashlib.sha256(f"{digest}/{section.name}".encode()).hexdigest()[:32]
        run = Run(id=run_id, provenance="imported", instrument=section.schema.instrument, instrument_version="imported",
                  model=record["model"], model_revision=str(record.get("model_revision", "unrecorded")),
                  corpus=f"imported:{record['source']}", corpus_hash=digest, settings=settings,
                  settings_hash=settings_hash(settings), device=str(record.get("runtime", "unrecorded")),
                  dtype=str(record.get("dtype", "unrecorded")), seed=0, packages=_packages(), git_commit=None,
                  started_at=now, ended_at=now, status="complete")
        tables = {section.schema.table: section.frame}
        written.append((run, tables))
        result.runs.append(run)
        result.tables[run.id] = tables
        result.judgments += [Judgment(target_kind="run", target_id=run.id, by=by, created_at=now, **j)
                             for j in section.judgments]
    try:
        store.write_runs(written, result.judgments)
    except IntegrityError:  # another process stored this very sheet between our check and our write
        prior = store.runs(provenance="imported", corpus_hash=digest)
        if not prior:
            raise
        return ImportResult(sheet.name, digest, runs=prior, already=True)
    return result


def _packages() -> dict[str, str]:
    try:
        return {"atlas-landscape": metadata.version("atlas-landscape")}
    except metadata.PackageNotFoundError:
        return {}


public("atlas", import_sheet, load_sheet, reference_sheet)
