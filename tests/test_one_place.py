"""One place each: every exception in ``atlas._errors``, one canonical JSON under every content hash
(``atlas._provenance``), one conversion of values to JSON (``atlas._jsonsafe``)."""

import ast
import builtins
import hashlib
import inspect
import json
import math
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import atlas
from atlas import _errors
from atlas._corpus import Corpus, Passage
from atlas._jsonsafe import json_safe
from atlas._provenance import canonical_json, content_hash, settings_hash
from atlas.lab import load_recipe, recipe_names

PACKAGE = Path(atlas.__file__).parent
#: the classes atlas/_errors.py defines (read from its source: a public class may show ``atlas`` as its module)
ERRORS = {node.name: getattr(_errors, node.name) for node in ast.parse(Path(_errors.__file__).read_text("utf-8")).body
          if isinstance(node, ast.ClassDef)}


# --- the error tree ------------------------------------------------------------------------------------

def _exception_classes() -> list[tuple[str, str]]:
    """(module path, class name) of every class in atlas/ whose bases name an exception: a builtin one, one
    of atlas._errors, one defined in atlas/ from those, or any base called ...Error, ...Exception, ...Warning."""
    classes = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases]
                classes.append((str(path.relative_to(PACKAGE.parent)), node.name, bases))
    known = {n for n in dir(builtins) if inspect.isclass(getattr(builtins, n))
             and issubclass(getattr(builtins, n), BaseException)} | set(ERRORS)
    found, grew = set(), True
    while grew:
        grew = False
        for where, name, bases in classes:
            if (where, name) not in found and any(b in known or b.endswith(("Error", "Exception", "Warning"))
                                                  for b in bases):
                found.add((where, name))
                known.add(name)
                grew = True
    return sorted(found)


def test_every_exception_class_of_the_package_is_defined_in_errors():
    found = _exception_classes()
    assert {name for _, name in found} >= set(ERRORS)  # the scan sees the tree itself
    assert [(where, name) for where, name in found if where != "atlas/_errors.py"] == []


def test_every_error_is_in_the_tree_drawn_in_the_module_doc_and_exported_by_it():
    assert set(_errors.__all__) == set(ERRORS)
    tree = [line for line in _errors.__doc__.splitlines() if line.strip() == "AtlasError" or "──" in line]
    drawn = {line.replace("│", " ").replace("├──", " ").replace("└──", " ").split()[0] for line in tree}
    assert drawn == set(ERRORS)
    for name, cls in ERRORS.items():
        assert issubclass(cls, _errors.AtlasError), name
        assert cls.__doc__, f"{name} says what it is for"


def test_each_kind_keeps_the_builtin_base_a_caller_catches():
    kinds = {_errors.BadInput: ValueError, _errors.Unavailable: RuntimeError, _errors.Refused: RuntimeError}
    for cls in ERRORS.values():
        for kind, builtin in kinds.items():
            if issubclass(cls, kind):
                assert issubclass(cls, builtin), cls
    # a refutation is a failed assertion to pytest; every other verdict signal is neither input nor refusal
    assert issubclass(_errors.RefutedVerdict, AssertionError)
    assert issubclass(_errors.Inconclusive, _errors.NotSupported) and not issubclass(_errors.Inconclusive,
                                                                                      (ValueError, RuntimeError))
    assert not issubclass(_errors.NotSupported, (_errors.BadInput, _errors.Unavailable, _errors.Refused))


def test_errors_with_details_keep_them():
    sheet = _errors.SheetError("s.yaml", [f"row {i}" for i in range(52)])
    assert sheet.errors[0] == "row 0" and "... and 2 more" in str(sheet) and isinstance(sheet, ValueError)
    rows = pd.DataFrame({"ppl": [-1.0]})
    violation = _errors.SchemaViolation("perplexity", [("to_be_between", "ppl", rows), ("unique", "id", None)])
    assert violation.failures[1] == ("unique", "id", None)
    assert "to_be_between on ppl" in str(violation) and "-1.0" in str(violation)


# --- one canonical JSON, one content hash --------------------------------------------------------------

def test_canonical_json_sorts_keys_at_every_depth_and_writes_no_spaces():
    a = {"b": {"y": 1, "x": [1, 2.5, None, True]}, "a": "z"}
    b = {"a": "z", "b": {"x": [1, 2.5, None, True], "y": 1}}
    assert canonical_json(a) == canonical_json(b) == '{"a":"z","b":{"x":[1,2.5,null,true],"y":1}}'
    assert content_hash(a) == content_hash(b) == "sha256:" + hashlib.sha256(canonical_json(a).encode()).hexdigest()
    assert content_hash({"a": 1}) != content_hash({"a": 2}) != content_hash({"a": "2"})
    assert content_hash((1, 2)) == content_hash([1, 2])


def test_canonical_json_keeps_text_as_it_is_and_hashes_its_utf8():
    assert canonical_json({"name": "Español ✓"}) == '{"name":"Español ✓"}'
    assert content_hash({"é": "é"}) == "sha256:" + hashlib.sha256('{"é":"é"}'.encode("utf-8")).hexdigest()
    # the composed and decomposed spellings of é are different text, and so different content
    assert content_hash("\u00e9") != content_hash("e\u0301")


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf"), np.float64("nan")])
def test_canonical_json_refuses_a_number_json_cannot_hold(number):
    with pytest.raises(ValueError):
        canonical_json({"threshold": number})
    with pytest.raises(ValueError):
        content_hash([1, number])


def test_other_objects_stand_for_their_text():
    assert canonical_json({"at": date(2026, 4, 1), "in": Path("a/b")}) == '{"at":"2026-04-01","in":"a/b"}'


def test_settings_hash_is_the_content_hash_without_its_prefix():
    settings = {"seed": 0, "instrument": "perplexity"}
    assert "sha256:" + settings_hash(settings) == content_hash(settings)
    assert len(settings_hash(settings)) == 64


def test_recipe_hashes_are_the_ones_their_checkpoint_folders_were_named_by():
    """Recipe hashes name the Lab's checkpoint folders: each is still the SHA-256 of the resolved recipe in
    the form it was first taken over (sorted keys, no spaces, ASCII)."""
    for name in recipe_names():
        recipe = load_recipe(name)
        resolved = {k: v for k, v in recipe.as_dict().items() if k not in ("name", "description", "seed")}
        if "corpus" in resolved["data"]:
            resolved["data"]["corpus"] = atlas.load_corpus(resolved["data"]["corpus"]).hash
        first = json.dumps(resolved, sort_keys=True, separators=(",", ":"))
        assert recipe.hash == "sha256:" + hashlib.sha256(first.encode()).hexdigest(), name


def test_the_corpus_hash_keeps_its_own_spaced_form():
    """The one hash not over canonical_json: corpus recipes hold it, so it keeps the form it was born with."""
    corpus = Corpus("c", (Passage("p-1", "poetry", "Olé"), Passage("p-2", "prose", "b")))
    spaced = '[["p-1", "poetry", "Olé"], ["p-2", "prose", "b"]]'
    assert corpus.hash == "sha256:" + hashlib.sha256(spaced.encode("utf-8")).hexdigest()


# --- one JSON-safe conversion --------------------------------------------------------------------------

def test_missing_values_become_null_and_numpy_values_python_ones():
    row = {"nan": float("nan"), "np_nan": np.float64("nan"), "na": pd.NA, "nat": pd.NaT, "none": None,
           "i": np.int64(3), "f": np.float32(0.5), "b": np.bool_(True), "arr": np.array([[1, 2]]),
           "t": (1, "x"), 7: "key as text"}
    safe = json_safe(row)
    assert safe == {"nan": None, "np_nan": None, "na": None, "nat": None, "none": None, "i": 3, "f": 0.5,
                    "b": True, "arr": [[1, 2]], "t": [1, "x"], "7": "key as text"}
    assert type(safe["i"]) is int and type(safe["f"]) is float and type(safe["b"]) is bool
    json.dumps(safe, allow_nan=False)  # strict JSON


def test_times_are_iso_8601():
    at = datetime(2026, 4, 1, 12, 30, tzinfo=timezone.utc)
    assert json_safe([at, date(2026, 4, 1), pd.Timestamp("2026-04-01 12:30")]) == [
        "2026-04-01T12:30:00+00:00", "2026-04-01", "2026-04-01T12:30:00"]


def test_infinity_and_other_objects_are_refused_unless_the_value_is_a_record_of_what_was_seen():
    for value in (float("inf"), np.float64("-inf"), {"deep": [1.0, math.inf]}):
        with pytest.raises(ValueError, match="no JSON form"):
            json_safe(value)
    for value in (object(), Path("x"), {"deep": [{1, 2}]}):
        with pytest.raises(TypeError, match="no JSON form"):
            json_safe(value)
    evidence = {"deep": [1.0, math.inf, -math.inf, math.nan], "where": Path("x/y"), "seen": {3}}
    assert json_safe(evidence, lenient=True) == {"deep": [1.0, None, None, None], "where": "x/y", "seen": "{3}"}


def test_plain_json_data_comes_back_unchanged():
    data = {"a": [1, 2.5, "é", None, True, {"b": []}], "c": {}}
    assert json_safe(data) == data
    assert json_safe(data) is not data  # a copy: the caller's value is never changed
