"""Hostile text in everything a report shows: corpus text, ids and domain names, an imported sheet (model,
source, labels, notes, caveats), Technician judgments, verdict claims and reasons.

The report is parsed (``html.parser``), page by page: no element, attribute or URL came from the data
(no ``img``, ``textarea``, ``iframe``, no script but the report's own one; no ``on*`` attribute; no
``javascript:`` link; no tag the same report does not have with harmless data), the hostile strings are there as
text, and Jinja never evaluated ``{{ 7*7 }}``.
"""

import json
from html.parser import HTMLParser

import pytest
import yaml
from _support import record

from atlas import Store, load_corpus, run_instrument
from atlas._import import import_sheet, load_sheet
from atlas._judgment import judge
from atlas._report import bidi_safe, render_report
from atlas._store import VerdictRecord

pytestmark = pytest.mark.reliability

HOSTILE = ['<script>alert("x")</script>', "{{ 7*7 }}", "</textarea><img src=x onerror=alert(1)>",
           '"><svg onload=alert(1)>', "javascript:alert(1)", "\u202egnp.exe\u202c", "zero\u200bwidth\u200d",
           "{% raw %}raw{% endraw %}", "<iframe src=//evil>"]
BENIGN = ["plain one", "plain two", "plain three", "plain four", "plain five", "plain six", "plain seven",
          "plain eight", "plain nine"]
FORBIDDEN_TAGS = {"img", "textarea", "iframe", "object", "embed", "form", "input", "base", "meta-refresh"}


class Elements(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.text, self.scripts = set(), [], [], 0

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.scripts += tag == "script"
        self.attrs += [(tag, k, v or "") for k, v in attrs]

    def handle_data(self, data):
        self.text.append(data)


def _parse(folder):
    pages = {}
    for page in sorted(folder.rglob("*.html")):
        parser = Elements()
        parser.feed(page.read_text(encoding="utf-8"))
        pages[page.relative_to(folder).as_posix()] = parser
    return pages


def _store_everything(tmp_path, strings, tiny_gpt2, name):
    store = Store(f"sqlite:///{tmp_path / f'{name}.db'}")
    corpus_file = tmp_path / f"{name}.jsonl"
    with corpus_file.open("w", encoding="utf-8") as f:
        for i, s in enumerate(strings):
            f.write(json.dumps({"id": f"{s} #{i}", "domain": f"{s} domain", "text": f"{s} and some words {i}"}) + "\n")
    result = run_instrument(store, tiny_gpt2, load_corpus(corpus_file), "perplexity", progress=False,
                            bootstrap_resamples=50)
    sheet = tmp_path / f"{name}.yaml"
    sheet.write_text(yaml.safe_dump({
        "record": {"source": strings[0], "model": strings[1], "caveats": strings[2:4], "judged_by": strings[4]},
        "t": {"table": "perplexity_domains", "note": strings[5], "rows": [
            {"domain": s, "n": 5, "ppl": 20.0 + i, "territory": "elevated", "territory_note": s, "label": s,
             "note": s} for i, s in enumerate(strings)]}}, allow_unicode=True), encoding="utf-8")
    import_sheet(store, load_sheet(sheet))
    domain = result.tables["perplexity_domains"]["domain"].iloc[0]
    judge(store, result.run.id, "territory", "high", by=strings[6], note=strings[7], row=domain)
    for i, s in enumerate(strings[:3]):
        store.write_verdict(VerdictRecord(
            prediction=f"{s}-P{i}", version="abc", form="general", claim=s, source=s, model=s, corpus=s,
            corpus_hash="h", profile="quick", outcome=["supported", "refuted", "not_run"][i], effect=1.5, ci_low=1.0,
            ci_high=2.0, n=3, criterion={"statistic": s, "direction": ">", "threshold": 1.0, "ci": s, "sample": s},
            criterion_hash="x" * 64, reason=s, evidence={"note": s}, run_ids=[result.run.id], session=s))
    out = tmp_path / f"{name}-reports"
    render_report(store, out)
    return _parse(out)


def test_the_report_escapes_hostile_text_everywhere(tmp_path, tiny_gpt2):
    hostile = _store_everything(tmp_path, HOSTILE, tiny_gpt2, "hostile")
    benign = _store_everything(tmp_path, BENIGN, tiny_gpt2, "benign")
    benign_tags = set().union(*(p.tags for p in benign.values()))
    for name, page in hostile.items():
        assert not page.tags & FORBIDDEN_TAGS, (name, page.tags & FORBIDDEN_TAGS)
        assert page.scripts == 1, name  # the report's own (atlas/templates/_tables.js.j2), and no other
        assert page.tags <= benign_tags, (name, page.tags - benign_tags)
        assert not [a for a in page.attrs if a[1].startswith("on")], name
        assert not [a for a in page.attrs if "javascript:" in a[2].lower()], name
    index = hostile["index.html"]
    text = "".join(index.text)
    for s in HOSTILE:  # shown as text; an explicit bidirectional control as its code point (it cannot act)
        assert bidi_safe(s) in text, f"{s!r} is not shown as text"
    assert "<U+202E>gnp.exe<U+202C>" in text
    assert "{{ 7*7 }}" in text and " 49 " not in text
    record("hostile strings rendered as text (no injected element)", len(HOSTILE))


# text that is not text: JSON and YAML can write a lone surrogate ("\ud800"), which no UTF-8 file, hash or page can
# hold; and a name of nothing but invisible characters. Each is one clear error where it is read, nothing stored.
NOT_TEXT = {
    "corpus: a lone surrogate": ("corpus.jsonl", '{"id": "a", "domain": "poetry", "text": "x \\udc80 y"}\n',
                                 ["line 1", "lone surrogate", "'\\udc80'"]),
    "corpus: an id of a zero-width space": ("corpus.jsonl", '{"id": "\u200b", "domain": "poetry", "text": "x"}\n',
                                            ["line 1", "must not be empty"]),
    "corpus: a domain of direction marks": ("corpus.jsonl", '{"id": "a", "domain": "\u200e\u202e", "text": "x"}\n',
                                            ["line 1", "must not be empty"]),
    "sheet: a lone surrogate": ("sheet.yaml", 'record: {source: "s\\ud800", model: m}\nt: {table: perplexity_domains, '
                                              'rows: [{domain: poetry, n: 5, ppl: 58.6}]}\n',
                                ["line 1", "lone surrogate", "fix the \\u escape"]),
}


@pytest.mark.parametrize("case", NOT_TEXT)
def test_text_that_is_not_text_is_one_clear_error(case, tmp_path):
    from click.testing import CliRunner

    from atlas.cli import main

    name, content, words = NOT_TEXT[case]
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'atlas.db'}"
    args = (["import", str(path)] if name.endswith(".yaml") else
            ["measure", "perplexity", "--model", "tiny-gpt2", "--corpus", str(path)])
    result = CliRunner().invoke(main, [*args, "--db", db])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    for word in words:
        assert word in result.output, (word, result.output)
    assert not (tmp_path / "atlas.db").exists() or Store(db).runs() == []
    record("hostile strings refused as not text (one clear error)", 1)
