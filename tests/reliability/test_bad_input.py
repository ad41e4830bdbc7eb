"""Bad input: every case is one clear error (no traceback) naming the problem and the fix, and nothing stored.

Exit status 2 for bad input, 1 for what is unavailable or refused (``atlas._errors``). The database URL is
checked before the model loads. Two cases store something on purpose, and say so: a model whose numbers
overflow float64 while it is measured leaves a *failed* run (a measurement was attempted and its record is
the error), and a passage longer than the model's context leaves only a "refused" protocol-log step (it is
found before anything is measured).
"""

import math
import traceback

import pytest
import torch
import yaml
from _support import record
from click.testing import CliRunner

from atlas import STARTER_CORPUS, Store, _models, load_model
from atlas.cli import main

pytestmark = pytest.mark.reliability


def cli(*args):
    """``atlas ARGS`` in process; an escaped exception (a traceback) fails the test."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError("".join(traceback.format_exception(result.exception)))
    return result


def refused(result, code: int, *words: str) -> str:
    """The one-line error of ``result``: its exit status and the words that name the problem and the fix."""
    assert result.exit_code == code, result.output
    message = result.output.strip()
    assert "Traceback" not in message
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in: {message}"
    record("bad inputs tried (one clear error, nothing stored)", 1)
    return message


def nothing_stored(url: str) -> None:
    store = Store(url)
    assert store.runs() == [] and store.verdicts() == [] and store.judgments() == []


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'atlas.db'}"


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if a model is loaded: the checks before it must have refused the input."""
    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(_models, "load_model", loaded)


def measure(db, corpus, *extra, instrument="perplexity", model="tiny-gpt2"):
    return cli("measure", instrument, "--model", model, "--corpus", corpus, "--db", db, *extra)


GOOD = '{"id": "a", "domain": "poetry", "text": "the sea"}\n'
CORPORA = {  # file content -> words the error must hold
    "empty": (b"", ["holds no passages"]),
    "blank lines": (b"\n \n\t\n", ["holds no passages"]),
    "not utf-8": (GOOD.encode() + b'{"id": "b", "domain": "x", "text": "caf\xe9"}\n', ["line 2", "UTF-8", "re-save"]),
    "not json": (GOOD.encode() + b"{id: b}\n", ["line 2", "not valid JSON"]),
    "not an object": (b'["a", "poetry", "text"]\n', ["line 1", "expected a JSON object", "id, domain, text"]),
    "missing text": (b'{"id": "a", "domain": "poetry"}\n', ["line 1", "missing field 'text'", "required"]),
    "number as text": (b'{"id": "a", "domain": "poetry", "text": 7}\n', ["line 1", "'text' must be a string"]),
    "empty text": (b'{"id": "a", "domain": "poetry", "text": "  "}\n', ["line 1", "empty text"]),
    "blank id": (b'{"id": " ", "domain": "poetry", "text": "x y"}\n', ["line 1", "must not be empty"]),
    "duplicate id": ((GOOD + GOOD).encode(), ["line 2", "duplicate id 'a'", "first used on line 1"]),
    "truncated line": (GOOD.encode() + b'{"id": "b", "dom', ["line 2", "not valid JSON"]),
}


@pytest.mark.parametrize("case", CORPORA)
def test_a_malformed_corpus(case, tmp_path, db, no_model_load):
    content, words = CORPORA[case]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(content)
    refused(measure(db, corpus), 2, str(corpus), *words)
    assert not (tmp_path / "atlas.db").exists()


def test_a_corpus_that_is_missing_or_a_folder(tmp_path, db, no_model_load):
    refused(measure(db, tmp_path / "nope.jsonl"), 2, "no such file", "JSON Lines")
    refused(measure(db, tmp_path), 2, "a folder, not a file")


def test_a_passage_longer_than_the_context_is_refused_before_measuring(tmp_path, db):
    corpus = tmp_path / "long.jsonl"
    corpus.write_text(GOOD + '{"id": "long", "domain": "poetry", "text": "%s"}\n' % ("word " * 400))
    refused(measure(db, corpus), 2, "more than tiny-gpt2's context of 1024", "split long passages")
    store = Store(db)
    assert store.runs() == []
    assert [e.action for e in store.events()] == ["refused"]  # the one record: it was asked for, and refused


@pytest.mark.parametrize("url, words", [
    ("not a url", ["is not a database URL", "sqlite:///atlas.db"]),
    ("nosuch://user:pw@host/db", ["no database backend 'nosuch'", "postgresql+psycopg://"]),
    ("mysql://user:pw@host/db", ["driver", "not installed"]),
    ("postgresql+psycopg://atlas:pw@127.0.0.1:1/atlas", ["cannot open the store", "server is running"]),
    ("sqlite:////proc/atlas.db", ["cannot open the store", "writable"]),
])
def test_a_store_that_cannot_be_used_is_refused_before_the_model_loads(url, words, tmp_path, no_model_load):
    message = refused(measure(url, STARTER_CORPUS), 2, *words)
    assert ":pw@" not in message


def test_an_sqlite_file_in_a_missing_or_impossible_folder(tmp_path, no_model_load):
    (tmp_path / "a-file").write_text("")
    for url in (f"sqlite:///{tmp_path / 'missing' / 'atlas.db'}", f"sqlite:///{tmp_path / 'a-file' / 'atlas.db'}"):
        refused(measure(url, STARTER_CORPUS), 2, "is not a folder", "create the folder")


@pytest.mark.parametrize("command", [["verdicts"], ["report", "--out", "reports"],
                                     ["judge", "1", "f", "v", "--by", "x"], ["import-reference"], ["export", "abcd"]])
def test_every_command_refuses_a_garbage_url(command):
    refused(cli(*command, "--db", "::garbage::"), 2, "is not a database URL")


@pytest.mark.parametrize("extra, words", [
    (["--batch-size", "-3"], ["batch_size (--batch-size)", "at least 1", "-3"]),
    (["--batch-size", "0"], ["batch_size (--batch-size)", "at least 1"]),
    (["--per-domain", "0"], ["--per-domain", "0 is not in the range x>=1"]),
    (["--per-domain", "-2"], ["--per-domain", "x>=1"]),
    (["--bos-policy", "bogus"], ["--bos-policy", "'bogus' is not one of 'prepend', 'none'"]),
    (["--seed", "abc"], ["--seed", "not a valid integer"]),
])
def test_bad_settings(extra, words, db):
    refused(measure(db, STARTER_CORPUS, *extra), 2, *words)
    nothing_stored(db)


def test_a_coupling_window_too_short(db):
    refused(measure(db, STARTER_CORPUS, "--max-tokens", "1", instrument="coupling"), 2, "max_tokens must be at least 2")
    nothing_stored(db)


@pytest.mark.parametrize("model, words", [
    ("no-such-model-xyz", ["is not available", "huggingface-cli download"]),
    ("./models/none-here", ["is not available", "local checkpoint directory"]),
])
def test_a_model_that_is_not_here(model, words, db):
    refused(measure(db, STARTER_CORPUS, model=model), 1, *words)
    nothing_stored(db)


def _checkpoint(folder, change):
    lm = load_model("tiny-gpt2", device="cpu")
    with torch.no_grad():
        change(lm.model)
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    return folder


def test_a_model_with_non_finite_weights_is_refused_before_measuring(tmp_path, db):
    folder = _checkpoint(tmp_path / "nan-model",
                         lambda m: m.transformer.h[0].mlp.c_fc.weight.view(-1)[:3].fill_(math.nan))
    refused(measure(db, STARTER_CORPUS, model=folder), 1, "non-finite weights", "h.0.mlp.c_fc.weight",
            "reload")
    store = Store(db)
    assert store.runs() == [] and [e.action for e in store.events()] == ["refused"]


def test_a_model_whose_perplexity_overflows_float64_is_refused_not_crashed(tmp_path, db):
    folder = _checkpoint(tmp_path / "hot-model", lambda m: m.transformer.ln_f.weight.fill_(1e5))
    refused(measure(db, STARTER_CORPUS, "--per-domain", "1", model=folder), 1, "exceeds float64",
            "709.78", "check the checkpoint")
    [run] = Store(db).runs()  # measured, and failed: its error is the record
    assert run.status == "failed" and "NotFinite" in run.error and Store(db).tables(run.id) == {}


def _sheet(tmp_path, name, content) -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8))
GOOD_ROW = {"domain": "poetry", "n": 5, "ppl": 58.6}
SHEETS = {
    "binary": ("model.bin", bytes(range(256)) * 4, ["not UTF-8 text", "YAML, JSON or CSV"]),
    "nul bytes": ("sheet.yaml", "record: {}\x00\n", ["NUL bytes"]),
    "alias bomb": ("bomb.yaml", BOMB, ["alias *a refused", "write the values out"]),
    "bad yaml": ("sheet.yaml", "record: [unclosed\n", ["not valid YAML"]),
    "bad json": ("sheet.json", "{\"record\": ", ["not valid JSON"]),
    "deep json": ("sheet.json", "[" * 100_000 + "]" * 100_000, ["nested too deeply"]),
    "a list": ("sheet.yaml", "- 1\n- 2\n", ["must be a mapping"]),
    "no record": ("sheet.yaml", yaml.safe_dump({"t": {"table": "perplexity_domains", "rows": [GOOD_ROW]}}),
                  ["record: missing", "source", "model"]),
    "unknown table": ("sheet.yaml", yaml.safe_dump({"record": {"source": "s", "model": "m"},
                                                    "t": {"table": "nope", "rows": [GOOD_ROW]}}), ["no table 'nope'"]),
    "infinite value": ("sheet.yaml", "record: {source: s, model: m}\nt: {table: perplexity_domains, rows: "
                                     "[{domain: poetry, n: 5, ppl: .inf}]}\n", ["ppl", "expected a finite number"]),
    "text as number": ("sheet.yaml", yaml.safe_dump({"record": {"source": "s", "model": "m"}, "t": {
        "table": "perplexity_domains", "rows": [{**GOOD_ROW, "ppl": "high"}]}}), ["ppl", "expected a number"]),
    "below minimum": ("sheet.yaml", yaml.safe_dump({"record": {"source": "s", "model": "m"}, "t": {
        "table": "perplexity_domains", "rows": [{**GOOD_ROW, "ppl": 0.5}]}}), ["ppl", "below the minimum 1"]),
    "bad territory": ("sheet.yaml", yaml.safe_dump({"record": {"source": "s", "model": "m"}, "t": {
        "table": "perplexity_domains", "rows": [{**GOOD_ROW, "territory": "swamp"}]}}), ["'swamp'", "allowed"]),
}


@pytest.mark.parametrize("case", SHEETS)
def test_a_malformed_sheet(case, tmp_path, db):
    name, content, words = SHEETS[case]
    refused(cli("import", _sheet(tmp_path, name, content), "--db", db), 2, "was not imported", *words)
    nothing_stored(db)


def test_an_alias_bomb_is_refused_at_once(tmp_path, db):
    import time

    start = time.monotonic()
    cli("import", _sheet(tmp_path, "bomb.yaml", BOMB), "--db", db)
    assert time.monotonic() - start < 5  # expanded, it is 10**9 items


def test_a_csv_without_its_record(tmp_path, db):
    path = _sheet(tmp_path, "t.csv", "domain,n,ppl\npoetry,5,58.6\n")
    refused(cli("import", path, "--db", db), 2, "give the model and the source", "--model", "--source")
    nothing_stored(db)


@pytest.fixture
def imported(tmp_path, db):
    path = _sheet(tmp_path, "sheet.yaml", yaml.safe_dump({"record": {"source": "s", "model": "m"}, "t": {
        "table": "perplexity_domains", "rows": [GOOD_ROW]}}))
    assert cli("import", path, "--db", db).exit_code == 0
    return Store(db).runs()[0]


@pytest.mark.parametrize("args, words", [
    (["abcdef12", "territory", "high"], ["no run or verdict 'abcdef12'"]),
    (["99999999999999999999999999", "interpretation", "x"], ["no run or verdict"]),
    (["verdict:-5", "interpretation", "x"], ["no run or verdict '-5'"]),
    (["run:ab", "territory", "high"], ["at least 4 characters"]),
])
def test_judge_on_an_unknown_target(args, words, db, imported):
    refused(cli("judge", *args, "--by", "T", "--db", db), 2, *words)
    assert Store(db).judgments() == []


@pytest.mark.parametrize("args, words", [
    (["bogus", "x", "--row", "poetry"], ["'bogus' is not a Technician field", "declared: territory"]),
    (["territory", "swamp", "--row", "poetry"], ["'swamp' is not an allowed value", "laminar"]),
    (["territory", "high", "--row", "sea"], ["has no domain 'sea'", "poetry"]),
    (["territory", "high"], ["give --row"]),
])
def test_judge_with_a_bad_field_value_or_row(args, words, db, imported):
    refused(cli("judge", imported.id[:8], *args, "--by", "T", "--db", db), 2, *words)
    assert Store(db).judgments() == []


def test_judge_without_a_name(db, imported):
    refused(cli("judge", imported.id[:8], "territory", "high", "--row", "poetry", "--by", " ", "--db", db), 2,
            "say who judges", "--by")


def test_outputs_that_cannot_be_written(tmp_path, db):
    (tmp_path / "a-file").write_text("")
    blocked = tmp_path / "a-file" / "out"
    refused(cli("report", "--db", db, "--out", blocked), 2, "cannot write the report", "choose another folder")
    old = tmp_path / "v.json"
    old.write_text('{"verdicts": []}')
    refused(cli("diff", old, old, "--out", blocked / "flips.json"), 2, "cannot write", "choose another --out")
