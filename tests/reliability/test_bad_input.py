"""Bad input: every case is one clear error (no traceback) naming the problem and the fix, and nothing stored.

Exit status 2 for bad input, 1 for what is unavailable or refused (``atlas._errors``). The database URL is
checked before the model loads, and so is every instrument setting (against its entry function's declaration,
``atlas._bounds``). Two cases store something on purpose, and say so: a model whose numbers
overflow float64 while it is measured leaves a *failed* run (a measurement was attempted and its record is
the error), and a passage longer than the model's context leaves only a "refused" protocol-log step (it is
found before anything is measured).
"""

import math
import time
import traceback

import pytest
import torch
import yaml
from _support import REPO, record
from click.testing import CliRunner

from atlas import STARTER_CORPUS, SettingsError, Store, _corpus, _models, load_corpus, load_model, run_instrument
from atlas._vocabulary import load_vocabulary
from atlas.cli import main

pytestmark = pytest.mark.reliability


def cli(*args):
    """``atlas ARGS`` in process; an escaped exception (a traceback) fails the test."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError("".join(traceback.format_exception(result.exception)))
    return result


def refused(result, code: int, *words: str, one_line: bool = False) -> str:
    """The error of ``result``: its exit status and the words that name the problem and the fix (``one_line``:
    the whole output is that one line)."""
    assert result.exit_code == code, result.output
    message = result.output.strip()
    assert "Traceback" not in message
    if one_line:
        assert len(message.splitlines()) == 1, message
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
    "lone surrogate": (GOOD.encode() + b'{"id": "b", "domain": "poetry", "text": "half \\ud800 a pair"}\n',
                       ["line 2", "field 'text' holds a lone surrogate", "\\ud800"]),
    "nested 100,000 deep": (b'{"id": "a", "domain": "poetry", "text": "x", "source": ' + b"[" * 100_000
                            + b"]" * 100_000 + b"}\n", ["line 1", "nested too deeply"]),
    "duplicate id key": (b'{"id": "a", "domain": "poetry", "text": "x", "id": "b"}\n',
                         ["line 1", "key 'id' appears twice", "keep one"]),
    "zero-width domain": ('{"id": "a", "domain": "\u200b", "text": "the sea"}\n'.encode(),
                          ["line 1", "must not be empty", "zero-width"]),
    "invisible text": ('{"id": "a", "domain": "poetry", "text": "\u200b\u2060 \u200e"}\n'.encode(),
                       ["line 1", "empty text"]),
}


@pytest.mark.parametrize("case", CORPORA)
def test_a_malformed_corpus(case, tmp_path, db, no_model_load):
    content, words = CORPORA[case]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(content)
    refused(measure(db, corpus), 2, str(corpus), *words, one_line=True)
    assert not (tmp_path / "atlas.db").exists()


def test_a_50_mb_passage_is_refused_before_it_is_read_whole(tmp_path, db, no_model_load):
    corpus = tmp_path / "huge.jsonl"
    corpus.write_bytes(GOOD.encode() + b'{"id": "b", "domain": "poetry", "text": "' + b"word " * 10_000_000 + b'"}\n')
    start = time.monotonic()
    refused(measure(db, corpus), 2, "line 2", "longer than 1,048,576 bytes", "split long passages", one_line=True)
    assert time.monotonic() - start < 10 and not (tmp_path / "atlas.db").exists()


def test_a_corpus_file_over_the_limit(tmp_path, db, no_model_load, monkeypatch):
    monkeypatch.setattr(_corpus, "MAX_FILE_BYTES", 40)
    corpus = tmp_path / "big.jsonl"
    corpus.write_text(GOOD * 2)
    refused(measure(db, corpus), 2, "over the limit of 40", "split it", one_line=True)


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
    (["--batch-size", "-3"], ["batch_size must be at least 1", "-3", "--batch-size"]),
    (["--batch-size", "0"], ["batch_size must be at least 1", "--batch-size"]),
    (["--per-domain", "0"], ["--per-domain", "0 is not in the range x>=1"]),
    (["--per-domain", "-2"], ["--per-domain", "x>=1"]),
    (["--bos-policy", "bogus"], ["--bos-policy", "'bogus' is not one of 'prepend', 'none'"]),
    (["--seed", "abc"], ["--seed", "not a valid integer"]),
])
def test_bad_settings(extra, words, db, no_model_load):
    refused(measure(db, STARTER_CORPUS, *extra), 2, *words, one_line=True)
    nothing_stored(db)


# every instrument setting is checked against its entry function's declaration before the model loads
SETTINGS = [
    ("hessian", ["--tol", "nan"], ["tol must be a finite number above 0", "nan", "--tol"]),
    ("memory", ["--tol", "-inf"], ["tol must be a finite number above 0", "-inf"]),
    ("elasticity", ["--lr", "nan"], ["lr must be a finite number above 0", "--lr"]),
    ("elasticity", ["--ewc-lambda", "inf"], ["ewc_lambda must be a finite number at least 0", "--ewc-lambda"]),
    ("stiffness", ["--radii", "nan"], ["radii must be a comma list of finite numbers at least 0", "'nan'"]),
    ("stiffness", ["--radii", "inf"], ["radii must be a comma list", "'inf'"]),
    ("stiffness", ["--radii", ""], ["radii must be a comma list", "''"]),
    ("stiffness", ["--radii", "0.1,,0.2"], ["radii must be a comma list", "'0.1,,0.2'"]),
    ("perplexity", ["--seed", "-1"], ["seed must be at least 0 and below 4294967296", "-1", "--seed"]),
    ("perplexity", ["--seed", str(2 ** 32)], ["seed must be at least 0 and below 4294967296"]),
    ("hessian", ["--layers", "abc"], ["layers must be 'all' or a comma list of whole numbers", "'abc'"]),
    ("hessian", ["--layers", "1,-2"], ["layers must be 'all' or a comma list", "'1,-2'"]),
    ("hessian_coupling", ["--layers", "1.5"], ["layers must be 'all' or a comma list", "'1.5'"]),
    ("symmetry_orbits", ["--families", "mlp,wings"], ["families must be a comma list of names among mlp"]),
    ("ablation", ["--max-tokens", str(10 ** 30)], ["max_tokens must be", "63 bits"]),
    ("interpolation", ["--points", "1"], ["points must be at least 2"]),
]


@pytest.mark.parametrize("instrument, extra, words", SETTINGS, ids=[" ".join(c[:1] + tuple(c[1])) for c in SETTINGS])
def test_an_instrument_setting_out_of_its_declaration(instrument, extra, words, db, no_model_load):
    refused(measure(db, STARTER_CORPUS, *extra, instrument=instrument), 2, f"instrument {instrument!r}", *words,
            one_line=True)
    nothing_stored(db)


@pytest.mark.parametrize("instrument, settings", [
    ("hessian", {"tol": math.nan}), ("hessian", {"layers": "abc"}), ("stiffness", {"radii": ""}),
    ("elasticity", {"ewc_lambda": math.inf}), ("perplexity", {"seed": -1}), ("perplexity", {"batch_size": 2.0}),
    ("perplexity", {"batch_size": True}), ("perplexity", {"bootstrap_resamples": 0})])
def test_run_instrument_refuses_a_setting_before_anything_is_stored(instrument, settings, db, tiny_gpt2):
    with pytest.raises(SettingsError, match=f"instrument '{instrument}': {next(iter(settings))}"):
        run_instrument(Store(db), tiny_gpt2, load_corpus(STARTER_CORPUS), instrument, progress=False, **settings)
    assert Store(db).runs() == [] and Store(db).events() == []


def test_elasticity_with_too_few_passages_is_refused_before_it_measures(db):
    refused(measure(db, STARTER_CORPUS, "--per-domain", "2", "--fisher-passages", "2", "--max-tokens", "16",
                    instrument="elasticity"), 2, "every domain needs more than fisher_passages=2",
            "lower fisher_passages or add passages", one_line=True)
    store = Store(db)
    assert store.runs() == [] and [e.action for e in store.events()] == ["refused"]


def test_a_coupling_window_too_short(db):
    refused(measure(db, STARTER_CORPUS, "--max-tokens", "1", instrument="coupling"), 2, "max_tokens must be at least 2")
    nothing_stored(db)


@pytest.mark.parametrize("model, status, words", [
    ("no-such-model-xyz", 2, ["unknown model 'no-such-model-xyz'", "registry name (atlas models)"]),
    ("tiny-gtp2", 2, ["did you mean tiny-gpt2?"]),
    ("./models/none-here", 2, ["no checkpoint folder './models/none-here'"]),
    ("no-such-org/no-such-model", 1, ["is not available", "hf download no-such-org/no-such-model"]),
])
def test_a_model_that_is_not_here(model, status, words, db):
    refused(measure(db, STARTER_CORPUS, model=model), status, *words)
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
    "duplicate key": ("sheet.yaml", "record: {source: s, model: m}\nt: {table: perplexity_domains, rows: "
                                    "[{domain: poetry, n: 5, ppl: 58.6, ppl: 3.0}]}\n",
                      ["line 2", "key 'ppl' appears twice in one mapping", "keep one"]),
    "duplicate section": ("sheet.yaml", "record: {source: s, model: m}\nrecord: {source: t, model: n}\n",
                          ["line 2", "key 'record' appears twice"]),
    "deep yaml": ("sheet.yaml", "a: " + "[" * 100_000 + "]" * 100_000 + "\n", ["nested too deeply"]),
}


@pytest.mark.parametrize("case", SHEETS)
def test_a_malformed_sheet(case, tmp_path, db):
    name, content, words = SHEETS[case]
    refused(cli("import", _sheet(tmp_path, name, content), "--db", db), 2, "was not imported", *words)
    nothing_stored(db)


def test_a_recipe_with_a_key_named_twice(tmp_path, db):
    recipe = tmp_path / "twice.yaml"
    recipe.write_text((REPO / "atlas" / "lab" / "recipes" / "modular-addition.yaml").read_text() + "steps: 1\n")
    refused(cli("train", recipe, "--db", db, "--out", tmp_path / "lab"), 2, "key 'steps' appears twice",
            one_line=True)
    nothing_stored(db)


def test_the_vocabulary_with_a_key_named_twice():
    with pytest.raises(Exception, match="line 2: key 'terms' appears twice") as info:
        load_vocabulary("terms: []\nterms: []\n")
    assert type(info.value).__name__ == "VocabularyError"


def test_every_yaml_file_is_read_by_the_one_strict_reader():
    """No module of atlas calls PyYAML's own loaders: ``atlas._yaml`` is the one place YAML is read."""
    for path in (REPO / "atlas").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        if path.name != "_yaml.py":
            assert "yaml.safe_load(" not in source and "yaml.load(" not in source, path


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


CUDA_PREDICTION = '''
import pytest
from atlas import Criterion

@pytest.mark.prediction(id="T-ppl", claim="perplexity exceeds 1", needs=("perplexity",),
                        criterion=Criterion("mean ppl", ">", 1.0))
def test_ppl(prediction):
    ppl = prediction.evidence["perplexity"]["perplexity_domains"]["ppl"]
    prediction.conclude(effect=float(ppl.mean()), ci=(float(ppl.min()), float(ppl.max())), n=len(ppl))
'''


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here: the device is available")
def test_a_device_that_is_not_here_makes_every_prediction_not_run(prediction_project):
    pytester, db, args = prediction_project(CUDA_PREDICTION, 1, "--atlas-device=cuda", "--atlas-model=tiny-gpt2")
    pytester.runpytest(*args).assert_outcomes(skipped=1)  # "not run", never ERROR
    [verdict] = Store(db).latest_verdicts()
    assert verdict.outcome == "not_run" and "torch sees no CUDA GPU" in verdict.reason
    assert Store(db).runs() == []
    record("bad inputs tried (one clear error, nothing stored)", 1)
