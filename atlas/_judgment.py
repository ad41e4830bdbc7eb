"""The human-judgment boundary: Technician fields, and the judgments that fill them.

Automation computes what can be computed and leaves blank what needs a
Technician's call. The schema declares those calls (``technician:`` in
``schema/<table>.yaml``, and ``schema/verdicts.yaml`` for verdicts): the territory
of a domain's perplexity, an interpretation of an anomaly. They are never columns
of a measurement table; a judgment is its own append-only row (``Judgment``) that
names what it is about (a run's table and row, or a verdict). A new call is a new
row: the latest counts, the history stays. Judgments never change a measurement.

    atlas judge 3f2a territory "moderate gap" --row poetry --by "A. Technician" --note "..."
    atlas judge 12 interpretation "the dip tracks the attention sink" --by "A. Technician"   # verdict 12
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._errors import BadInput, JudgmentError
from ._public import public
from ._schema import schema_for, verdict_technician
from ._store import Judgment, Run, Store, VerdictRecord

__all__ = ["FieldStatus", "Target", "allowed_value", "judge", "resolve_target", "run_fields",
           "verdict_fields"]

AWAITING = "awaiting Technician"
MIN_PREFIX = 4  # shorter run-id prefixes are too easily confused with verdict ids


@dataclass(frozen=True)
class Target:
    kind: str  # run | verdict
    id: str
    run: Run | None = None
    verdict: VerdictRecord | None = None

    def __str__(self) -> str:
        if self.run is not None:
            return f"run {self.id[:8]} ({self.run.instrument} on {self.run.model})"
        return f"verdict {self.id} ({self.verdict.prediction} on {self.verdict.model})"


@dataclass
class FieldStatus:
    """One declared Technician field of one table (or verdict) and the judgment that counts for each row."""

    table: str | None
    field: str
    description: str
    values: list[str] | None
    row_column: str | None
    #: (row key or None, latest judgment or None, number of judgments made)
    rows: list[tuple[str | None, Judgment | None, int]] = field(default_factory=list)

    @property
    def judged(self) -> int:
        return sum(1 for _, j, _ in self.rows if j is not None)

    @property
    def awaiting(self) -> int:
        return len(self.rows) - self.judged


def resolve_target(store: Store, ref: str) -> Target:
    """A run id (or a unique prefix of at least 4 characters) or a verdict id (an integer); ``run:`` /
    ``verdict:`` settle the rare ambiguity of an all-digit run prefix."""
    kind, _, rest = ref.partition(":")
    if kind in ("run", "verdict") and rest:
        ref, kinds = rest, (kind,)
    else:
        kinds = ("run", "verdict")
    ref = ref.strip().lower()
    if not ref:
        raise JudgmentError("name a run id (or a prefix of one) or a verdict id")
    if kinds == ("run",) and len(ref) < MIN_PREFIX:
        raise JudgmentError(f"give at least {MIN_PREFIX} characters of a run id, not {ref!r}")
    runs = [r for r in store.runs() if r.id.startswith(ref)] if "run" in kinds and len(ref) >= MIN_PREFIX else []
    verdict = store.verdict(int(ref)) if "verdict" in kinds and ref.isdigit() else None
    if len(runs) > 1:
        raise JudgmentError(f"{ref!r} is a prefix of {len(runs)} runs ({', '.join(r.id[:12] for r in runs[:5])}"
                            f"{' ...' if len(runs) > 5 else ''}): give more of the id")
    if runs and verdict is not None:
        raise JudgmentError(f"{ref!r} names both run {runs[0].id[:12]} and verdict {verdict.id}: "
                            f"write run:{ref} or verdict:{ref}")
    if runs:
        return Target("run", runs[0].id, run=runs[0])
    if verdict is not None:
        return Target("verdict", str(verdict.id), verdict=verdict)
    raise JudgmentError(f"no run or verdict {ref!r} in the store")


def allowed_value(spec: dict, value: str, *, field_name: str) -> str:
    """The canonical form of ``value`` for a Technician field, or ``JudgmentError`` saying what is allowed."""
    value = " ".join(str(value).split())
    if not value:
        raise JudgmentError(f"Technician field {field_name!r} needs a value")
    values = spec.get("values")
    if values is None:
        return value
    for allowed in values:
        if allowed.lower() == value.lower():
            return allowed
    raise JudgmentError(f"{value!r} is not an allowed value of Technician field {field_name!r}; "
                        f"allowed: {', '.join(repr(v) for v in values)}")


def run_fields(store: Store, run: Run, tables: dict | None = None) -> list[FieldStatus]:
    """Every Technician field of the run's stored tables, with the judgment that counts for each row."""
    tables = store.tables(run.id) if tables is None else tables
    latest: dict[tuple, Judgment] = {}
    counts: dict[tuple, int] = {}
    for j in store.judgments(target_kind="run", target_id=run.id):
        key = (j.table_name, j.field, j.row_key)
        latest[key], counts[key] = j, counts.get(key, 0) + 1
    out = []
    for name, df in tables.items():
        try:
            schema = schema_for(name)
        except BadInput:  # a table without a schema declares no Technician field
            continue
        for fname, spec in schema.technician.items():
            column = schema.judgment_row(fname)
            keys = [None] if column is None else list(dict.fromkeys(_key(v) for v in df.get(column, [])))
            keys += [k for (t, f, k) in latest if t == name and f == fname and k not in keys]  # rows judged elsewhere
            status = FieldStatus(name, fname, " ".join(spec["description"].split()), spec.get("values"), column)
            status.rows = [(k, latest.get((name, fname, k)), counts.get((name, fname, k), 0)) for k in keys]
            out.append(status)
    return out


def verdict_fields(store: Store, verdict: VerdictRecord) -> list[FieldStatus]:
    """The verdict-level Technician fields (``schema/verdicts.yaml``) and their latest judgments."""
    history = store.judgments(target_kind="verdict", target_id=str(verdict.id))
    out = []
    for fname, spec in verdict_technician().items():
        made = [j for j in history if j.field == fname]
        status = FieldStatus(None, fname, " ".join(spec["description"].split()), spec.get("values"), None)
        status.rows = [(None, made[-1] if made else None, len(made))]
        out.append(status)
    return out


def _key(value) -> str:
    """A row key as text: 4.0 and 4 are the same layer."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def judge(store: Store, ref: str, field_name: str, value: str, *, by: str, note: str = "",
          table: str | None = None, row: str | None = None) -> Judgment:
    """Record a Technician's call; raises ``JudgmentError`` (and writes nothing) unless the field is declared
    for the target, the row exists and the value is allowed."""
    if not by or not by.strip():
        raise JudgmentError("say who judges: --by NAME")
    target = resolve_target(store, ref)
    if target.kind == "verdict":
        declared = verdict_technician()
        if table is not None or row is not None:
            raise JudgmentError(f"{target} is judged as a whole: --table and --row apply to runs")
        if field_name not in declared:
            raise JudgmentError(f"{field_name!r} is not a Technician field of verdicts; declared: "
                                f"{', '.join(declared) or 'none'} (schema/verdicts.yaml)")
        return store.write_judgment(Judgment(
            target_kind="verdict", target_id=target.id, field=field_name, by=by.strip(), note=note,
            value=allowed_value(declared[field_name], value, field_name=field_name)))

    tables = store.tables(target.id)
    if not tables:
        raise JudgmentError(f"{target} has no stored tables (status {target.run.status}): nothing to judge")
    fields = {(f.table, f.field): f for f in run_fields(store, target.run, tables)}
    matches = [t for (t, f) in fields if f == field_name and (table is None or t == table)]
    if not matches:
        declared = ", ".join(f"{f} ({t})" for t, f in fields) or "none"
        where = f"table {table!r}" if table else f"the tables of {target} ({', '.join(tables)})"
        raise JudgmentError(f"{field_name!r} is not a Technician field of {where}; declared: {declared}")
    if len(matches) > 1:
        raise JudgmentError(f"{field_name!r} is a Technician field of several tables of {target} "
                            f"({', '.join(matches)}): choose one with --table")
    status = fields[(matches[0], field_name)]
    spec = schema_for(status.table).technician[field_name]
    if status.row_column is None:
        if row is not None:
            raise JudgmentError(f"{status.table}.{field_name} is judged per table: leave out --row")
    else:
        present = list(dict.fromkeys(_key(v) for v in tables[status.table][status.row_column]))
        if row is None:
            raise JudgmentError(f"{status.table}.{field_name} is judged per {status.row_column}: give --row "
                                f"(one of {', '.join(present)})")
        if _key(row) not in present:
            raise JudgmentError(f"{status.table} of {target} has no {status.row_column} {row!r}; "
                                f"it has {', '.join(present)}")
        row = _key(row)
    return store.write_judgment(Judgment(
        target_kind="run", target_id=target.id, table_name=status.table, row_key=row, field=field_name,
        value=allowed_value(spec, value, field_name=field_name), by=by.strip(), note=note))


public("atlas", judge)
