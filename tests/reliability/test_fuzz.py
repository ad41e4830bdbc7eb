"""Fuzzing (hypothesis): the corpus loader, the sheet importer and the store round trip.

Each test runs ``ATLAS_FUZZ_EXAMPLES`` examples (100 by default, 1000 in CI) and holds one property: the
loader and the importer either succeed or raise their one error kind (``CorpusError``, ``SheetError``),
never anything else, and what they accept is what was given; a table written to the store reads back equal,
dtypes included, on SQLite and on PostgreSQL.
"""

import json
import math
import unicodedata

import pandas as pd
import pytest
import yaml
from _support import FUZZ_EXAMPLES, record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlas import CorpusError, SheetError, Store, load_corpus
from atlas._import import import_sheet, load_sheet
from atlas._schema import coerce, schema_for
from atlas._store import Run, utcnow

pytestmark = pytest.mark.reliability

FUZZ = settings(max_examples=FUZZ_EXAMPLES, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(), st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
records = st.fixed_dictionaries({}, optional={"id": st.one_of(st.text(max_size=12), scalars),
                                              "domain": st.one_of(st.text(max_size=12), scalars),
                                              "text": st.one_of(st.text(max_size=40), scalars),
                                              "source": scalars})
#: what JSON can say and a corpus must refuse: a lone surrogate, a key twice, a name of invisible characters,
#: nesting deeper than the parser goes
invisible = st.text(alphabet="\u200b\u200c\u200d\u2060\ufeff\u200e\u202e \t", min_size=1, max_size=4)
hostile = st.one_of(
    st.tuples(st.sampled_from(["id", "domain", "text"]), st.sampled_from(["\\ud800", "\\udfff", "a\\udc80b"])).map(
        lambda p: json.dumps({"id": "s", "domain": "d", "text": "t"}).replace(f'"{p[0]}": "', f'"{p[0]}": "{p[1]}')),
    st.sampled_from(["id", "domain", "text", "source"]).map(
        lambda k: '{"id": "k", "domain": "d", "text": "t", "%s": "again"}' % k),
    st.tuples(st.sampled_from(["id", "domain", "text"]), invisible).map(
        lambda p: json.dumps({"id": "v", "domain": "d", "text": "t", p[0]: p[1]})),
    st.integers(10_000, 200_000).map(lambda n: '{"id": "n", "domain": "d", "text": "t", "source": %s}'
                                     % ("[" * n + "]" * n)))
lines = st.one_of(records.map(lambda r: json.dumps(r).encode()),
                  json_values.map(lambda v: json.dumps(v).encode()),
                  st.binary(max_size=30), st.text(max_size=30).map(str.encode), hostile.map(str.encode))


@FUZZ
@given(st.lists(lines, max_size=8))
def test_the_corpus_loader_accepts_valid_lines_and_refuses_the_rest_with_one_error(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("fuzz") / "c.jsonl"
    path.write_bytes(b"\n".join(content))
    try:
        corpus = load_corpus(path)
    except CorpusError as exc:
        assert str(exc).startswith(f"corpus {path}")
    else:
        ids = [p.id for p in corpus.passages]
        visible = lambda s: any(not c.isspace() and unicodedata.category(c) != "Cf" for c in s)  # noqa: E731
        assert len(ids) == len(set(ids)) and all(visible(p.text) and visible(p.domain) and visible(p.id)
                                                 for p in corpus.passages)
        decoded = (line.decode() for line in b"\n".join(content).split(b"\n"))
        given_pairs = [json.loads(line, object_pairs_hook=list) for line in decoded if line.strip()]
        assert all(len({k for k, _ in pairs}) == len(pairs) for pairs in given_pairs)  # no key twice
        assert ids == [dict(pairs)["id"] for pairs in given_pairs]
        assert corpus.hash == load_corpus(path).hash  # the hash is taken: every string is UTF-8
    record("fuzz examples run", 1)


row_values = st.fixed_dictionaries({"domain": st.one_of(st.text(max_size=10), scalars),
                                    "n": st.one_of(st.integers(-2, 10**6), scalars),
                                    "ppl": st.one_of(st.floats(), scalars)},
                                   optional={"ci_low": st.one_of(st.floats(), scalars),
                                             "ci_high": st.one_of(st.floats(), scalars),
                                             "territory": st.one_of(st.sampled_from(["elevated", "laminar"]), scalars),
                                             "label": scalars, "extra": scalars})
sheets = st.one_of(
    json_values,
    st.fixed_dictionaries({"record": st.one_of(st.fixed_dictionaries({"source": st.text(max_size=8),
                                                                      "model": st.text(max_size=8)}), json_values),
                           "t": st.fixed_dictionaries({"table": st.sampled_from(["perplexity_domains", "nope"]),
                                                       "rows": st.lists(row_values, max_size=4)})}))


@FUZZ
@given(sheets, st.sampled_from(["yaml", "json"]))
def test_the_sheet_importer_stores_valid_sheets_and_refuses_the_rest_with_one_error(tmp_path_factory, data, fmt):
    path = tmp_path_factory.mktemp("fuzz") / f"sheet.{fmt}"
    try:
        path.write_text(json.dumps(data) if fmt == "json" else yaml.safe_dump(data), encoding="utf-8")
    except (ValueError, yaml.YAMLError):
        return  # not expressible in the format (e.g. NaN in strict JSON): nothing to import
    store = Store("sqlite://")
    try:
        result = import_sheet(store, load_sheet(path))
    except SheetError as exc:
        assert exc.errors and store.runs() == []
    else:
        [run] = store.runs()
        table = store.tables(run.id)["perplexity_domains"]
        rows = data["t"]["rows"]
        assert len(table) == len(rows) and list(table["domain"]) == [r["domain"] for r in rows]
        assert all(math.isfinite(x) for x in table["ppl"]) and not result.already
        assert import_sheet(store, load_sheet(path)).already
    record("fuzz examples run", 1)


def _column(spec: dict):
    kind = spec["type"]
    if kind == "str":
        values = st.text(max_size=12)
    elif kind == "bool":
        values = st.booleans()
    elif kind == "int":
        values = st.integers(spec.get("min", -2**62), spec.get("max", 2**62))
    else:
        values = st.floats(spec.get("min"), spec.get("max"), allow_nan=False, allow_infinity=False)
    return st.one_of(st.none(), values) if spec.get("nullable") else values


def _tables(name: str):
    columns = schema_for(name).columns
    return st.lists(st.fixed_dictionaries({c: _column(spec) for c, spec in columns.items()}), min_size=1,
                    max_size=6).map(lambda rows: coerce(name, pd.DataFrame(rows, columns=list(columns))))


@FUZZ
@given(name=st.sampled_from(["perplexity", "perplexity_domains", "coupling", "hessian", "ablation_layers"]),
       data=st.data())
def test_a_table_reads_back_from_the_store_as_it_was_written(any_store, name, data):
    table = data.draw(_tables(name))
    run = Run(instrument=schema_for(name).instrument, instrument_version="1", model="m", model_revision="r",
              corpus="c", corpus_hash="h", settings={}, settings_hash="s", device="cpu", dtype="float32", seed=0,
              started_at=utcnow(), ended_at=utcnow(), status="complete")
    any_store.write_run(run, {name: table})
    pd.testing.assert_frame_equal(any_store.tables(run.id)[name], table, check_exact=True)
    record("fuzz examples run", 1)
