"""Validation of measurement tables against ``schema/*.yaml`` with great-expectations.

A schema file becomes an expectation suite: the exact column set, at least one row
(unless the schema says ``empty: allowed``), per column a type, a range
(``min``/``max``), allowed values (``values``) and non-nullness (unless ``nullable:
true``), uniqueness of the ``key`` columns, and ordered column pairs (``checks:
[{greater: ci_high, than: ppl}]``, equality allowed). Every numeric column is
finite: its range is closed by the largest float64 where the schema gives no bound,
so ±inf fails like any out-of-range value (NaN is a missing value, refused unless
the column is nullable). A table that fails raises ``SchemaViolation`` listing
every failed expectation with the offending rows.

A schema may also declare ``technician:`` fields: the human-judgment boundary.
They are not columns and automation never fills them (a table carrying one is
refused); a Technician records them with ``atlas judge``. Each field has a
``description``, optionally allowed ``values`` (else free text), the ``row``
column its judgments are keyed by (default: the table's single key column; null:
one judgment per table) and the Framework ``terms`` it reads. Judgments about a
verdict rather than a table are declared in ``schema/verdicts.yaml``.
"""

from __future__ import annotations

import functools
import logging
import sys
from dataclasses import dataclass, field
from importlib.resources import files

import pandas as pd
import yaml

from ._errors import BadInput, SchemaViolation
from ._public import public
from ._yaml import load_yaml, problem_line

__all__ = ["TableSchema", "coerce", "schema_for", "validate_table", "table_names",
           "verdict_technician"]

_TYPES = {
    "int": ["int64", "int32", "Int64", "int"],  # "int": a nullable column held as Python ints and None
    "float": ["float64", "float32", "Float64"],
    "str": ["object", "str", "string", "StringDtype"],
    "bool": ["bool", "boolean"],
}


#: the pandas dtype a column of each schema type is held in (nullable ints and bools use pandas' masked dtypes)
_DTYPES = {"int": "int64", "float": "float64", "str": "str", "bool": "bool"}
_NULLABLE_DTYPES = {"int": "Int64", "float": "float64", "str": "str", "bool": "boolean"}


@dataclass(frozen=True)
class TableSchema:
    table: str
    instrument: str
    description: str
    columns: dict[str, dict]
    key: tuple[str, ...] = ()
    checks: tuple[dict, ...] = field(default_factory=tuple)
    empty_allowed: bool = False  # ``empty: allowed``: a table with no rows is a complete result
    #: Technician fields: name -> {description, values?, row?, terms?}; never columns, never computed
    technician: dict[str, dict] = field(default_factory=dict)

    def judgment_row(self, name: str) -> str | None:
        """The column a Technician field's judgments are keyed by (None: one judgment per table)."""
        spec = self.technician[name]
        if "row" in spec:
            return spec["row"]
        return self.key[0] if len(self.key) == 1 else None


_NOT_TABLES = {"vocabulary.yaml", "verdicts.yaml"}


@functools.cache
def table_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in files("atlas.schema").iterdir()
                  if p.name.endswith(".yaml") and p.name not in _NOT_TABLES)


def _technician(where: str, raw, columns) -> dict[str, dict]:
    """Check a ``technician:`` block: a clear error naming the field when it is malformed."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise BadInput(f"{where}: `technician` must map field names to specs")
    for name, spec in raw.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("description"), str):
            raise BadInput(f"{where}: Technician field {name!r} needs a mapping with a `description`")
        if name in columns:
            raise BadInput(f"{where}: Technician field {name!r} is also a column; automation never fills it")
        values = spec.get("values")
        if values is not None and (not isinstance(values, list) or not all(isinstance(v, str) for v in values)):
            raise BadInput(f"{where}: Technician field {name!r}: `values` must be a list of strings")
        if spec.get("row") is not None and spec["row"] not in columns:
            raise BadInput(f"{where}: Technician field {name!r}: `row` {spec['row']!r} is not a column")
    return raw


@functools.cache
def _read(path, name: str) -> dict:
    """A schema file, read by the one YAML reader (``atlas._yaml``: a key named twice is refused)."""
    try:
        return load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise BadInput(f"{name}: {problem_line(exc)}") from None


def schema_for(table: str) -> TableSchema:
    """The schema of ``table`` (``schema/TABLE.yaml``): its instrument, columns with types and ranges, key,
    ordered column pairs and Technician fields. ``BadInput`` when no schema declares the table."""
    path = files("atlas.schema") / f"{table}.yaml"
    if not path.is_file() or path.name in _NOT_TABLES:
        raise BadInput(f"no schema for table {table!r}: expected schema/{table}.yaml")
    raw = _read(path, f"schema/{table}.yaml")
    return TableSchema(raw["table"], raw["instrument"], raw.get("description", ""), raw["columns"],
                       tuple(raw.get("key", ())), tuple(raw.get("checks", ())), raw.get("empty") == "allowed",
                       _technician(f"schema/{table}.yaml", raw.get("technician"), raw["columns"]))


@functools.cache
def verdict_technician() -> dict[str, dict]:
    """Technician fields a verdict can be judged on (``schema/verdicts.yaml``), e.g. ``interpretation``."""
    raw = _read(files("atlas.schema") / "verdicts.yaml", "schema/verdicts.yaml")
    return _technician("schema/verdicts.yaml", raw.get("technician"), {})


def _suite(schema: TableSchema):
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name=schema.table)
    suite.add_expectation(gxe.ExpectTableColumnsToMatchSet(column_set=list(schema.columns), exact_match=True))
    if not schema.empty_allowed:
        suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(min_value=1))
    for name, spec in schema.columns.items():
        suite.add_expectation(gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=_TYPES[spec["type"]]))
        if not spec.get("nullable", False):
            suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=name))
        if spec["type"] in ("int", "float"):  # finite: the range is closed by float64's largest value
            suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(
                column=name, min_value=spec.get("min", -sys.float_info.max),
                max_value=spec.get("max", sys.float_info.max)))
        if "values" in spec:
            suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=spec["values"]))
    if len(schema.key) == 1:
        suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=schema.key[0]))
    elif schema.key:
        suite.add_expectation(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(schema.key)))
    for check in schema.checks:
        suite.add_expectation(gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=check["greater"], column_B=check["than"], or_equal=True, ignore_row_if="either_value_is_missing"))
    return suite


@functools.cache
def _batch_definition():
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    asset = context.data_sources.add_pandas("atlas").add_dataframe_asset("measurements")
    return asset.add_batch_definition_whole_dataframe("whole table")


def coerce(table: str, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its schema's columns in the schema's order, each in the dtype its type declares.

    Applied to a table once it is validated and to every table read from the store, so a
    stored table and a fresh one compare equal, dtypes included. A table whose columns are
    not the schema's, or with no schema at all, is returned unchanged (validation names the difference)."""
    if table not in table_names():
        return df
    columns = schema_for(table).columns
    if set(df.columns) != set(columns):
        return df
    return pd.DataFrame({name: df[name].astype((_NULLABLE_DTYPES if spec.get("nullable") else _DTYPES)[spec["type"]])
                         for name, spec in columns.items()}, index=pd.RangeIndex(len(df)))


def validate_table(table: str, df: pd.DataFrame) -> None:
    """Raise ``SchemaViolation`` unless ``df`` matches ``schema/<table>.yaml``."""
    schema = schema_for(table)
    missing = [c for c in schema.columns if c not in df.columns]
    extra = [c for c in df.columns if c not in schema.columns]
    judged = [c for c in extra if c in schema.technician]
    if judged:
        raise SchemaViolation(table, [(f"Technician field(s) {judged} present: automation never fills them "
                                       "(record them with `atlas judge`)", "the table", None)])
    if missing or extra:  # per-column expectations cannot run; say so plainly
        raise SchemaViolation(table, [(f"columns missing {missing} / unexpected {extra}", "the table", None)])
    # great-expectations 1.x compares dtypes against numpy types and does not know
    # pandas 3's default string dtype (StringDtype with NaN), so strings go in as object.
    df = df.reset_index(drop=True).astype({c: object for c in df.columns if pd.api.types.is_string_dtype(df[c])})
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": df})
    result = batch.validate(_suite(schema), result_format="COMPLETE")
    if result.success:
        return
    failures = []
    for r in result.results:
        if r.success:
            continue
        kwargs = r.expectation_config.kwargs
        column = kwargs.get("column") or ", ".join(
            str(kwargs[k]) for k in ("column_A", "column_B", "column_list") if k in kwargs) or "the table"
        index = r.result.get("unexpected_index_list")
        rows = df.loc[list(index)] if index else None
        detail = r.result.get("observed_value")
        name = r.expectation_config.type + (f" (observed {detail})" if detail is not None and rows is None else "")
        failures.append((name, column, rows))
    raise SchemaViolation(table, failures)


public("atlas", schema_for, validate_table)
