"""Reports under stress: written by many processes at once, onto a full disk, into a folder that cannot be
written, and from a store holding hostile strings (a 20,000-character id, right-to-left overrides).

A full disk is a write that raises ``OSError(ENOSPC)`` after writing part of the file (as a real one does);
a folder that cannot be written is a write raising ``PermissionError`` (the suite runs as root, which
ignores permissions) or a path under a regular file. Layout is checked on the page's structure: every
long text node inherits ``overflow-wrap: anywhere`` from the page's own stylesheet (a tiny cascade below),
so no browser is needed.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from _support import NOT_RUN, REPO, child_env, record

from atlas import BadInput, Store, render_report
from atlas._export import export_run
from atlas._report import bidi_safe
from atlas._store import Run, VerdictRecord, utcnow

pytestmark = pytest.mark.reliability

LONG = "P" + "0123456789abcdef" * 1250  # 20,001 characters, no space to break at
RLO, PDF = "\u202e", "\u202c"
HEBREW = "\u05de\u05d5\u05d3\u05dc"  # "model": right-to-left letters


def _run(**kw) -> Run:
    fields = dict(instrument="perplexity", instrument_version="1", model="tiny", model_revision="r", corpus="starter",
                  corpus_hash="sha256:abc", settings={}, settings_hash="s", device="cpu", dtype="float32", seed=0,
                  started_at=utcnow(), ended_at=utcnow(), status="complete")
    return Run(**{**fields, **kw})


def _verdict(**kw) -> VerdictRecord:
    fields = dict(prediction="P5d", version="abc123", form="general", claim="c", source="", model="tiny",
                  corpus="starter", corpus_hash="sha256:abc", profile="quick", outcome="supported", effect=0.5, ci_low=0.1,
                  ci_high=0.9, n=3, criterion={"statistic": "rho", "direction": ">", "threshold": 0},
                  criterion_hash="h")
    return VerdictRecord(**{**fields, **kw})


def _store(url: str, model: str = "tiny", prediction: str = "P5d", corpus: str = "starter") -> Store:
    """A store with one perplexity run (a figure) and a supported and a not-run verdict, named as given."""
    store = Store(url)
    domains = pd.DataFrame({"domain": ["poetry", "spanish"], "n": [3, 3], "n_tokens": [90, 80], "ppl": [40.0, 70.0],
                            "ci_low": [35.0, 60.0], "ci_high": [45.0, 80.0], "bits_per_byte": [1.2, 1.5]})
    run = store.write_run(_run(model=model, corpus=corpus), {"perplexity_domains": domains})
    store.write_verdict(_verdict(prediction=prediction, model=model, corpus=corpus, run_ids=[run]))
    store.write_verdict(_verdict(prediction=prediction + "-b", model=model, corpus=corpus, outcome="not_run",
                                 effect=None, ci_low=None, ci_high=None, n=None, reason=f"{model} is not available"))
    return store


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".") or "partial" in p.name)


def _full_disk(monkeypatch, under: Path, error: int = errno.ENOSPC) -> None:
    """Every text write under ``under`` writes half of its text, then fails with ``error``."""
    write = Path.write_text

    def failing(self, data, *args, **kwargs):
        if under in self.parents:
            write(self, data[: len(data) // 2], *args, **kwargs)
            raise OSError(error, os.strerror(error))
        return write(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", failing)


# --- many writers, full disks, unwritable folders -------------------------------------------------------------

#: ``atlas report`` started by many processes at one moment (all imported first) on a slow disk (a write is
#: followed by 20 ms before the writer goes on), so that their writes of one page overlap
_AT_ONCE = """
import sys, time
from pathlib import Path
from atlas.cli import main
import atlas._report

write = Path.write_text

def slow(self, *args, **kwargs):
    written = write(self, *args, **kwargs)
    time.sleep(0.02)
    return written

Path.write_text = slow
ready, start = Path(sys.argv.pop(1)), Path(sys.argv.pop(1))
ready.touch()
while not start.exists():
    time.sleep(0.01)
main()
"""


def test_eight_reports_written_at_once_into_one_folder_all_succeed(tmp_path):
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    _store(url).engine.dispose()
    out, start = tmp_path / "reports", tmp_path / "start"
    ready = [tmp_path / f"ready-{i}" for i in range(8)]
    writers = [subprocess.Popen([sys.executable, "-c", _AT_ONCE, str(r), str(start), "report", "--db", url,
                                 "--out", str(out)], env=child_env(), cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for r in ready]
    while not all(r.exists() for r in ready) and all(w.poll() is None for w in writers):
        time.sleep(0.05)
    start.touch()
    results = [(w.wait(timeout=600), w.stderr.read()) for w in writers]
    assert [code for code, _ in results] == [0] * 8, results
    assert _leftovers(out) == [] and "P5d" in (out / "index.html").read_text(encoding="utf-8")
    record("concurrent report writers (all succeeded)", 8)


def test_a_report_interrupted_by_another_into_the_same_folder_keeps_both_whole(tmp_path, monkeypatch):
    """Deterministically, what eight writers race for: while one report renames its first page into place,
    another report is written whole into the same folder. Neither may lose its temporary file to the other."""
    store, out = _store(f"sqlite:///{tmp_path / 'atlas.db'}"), tmp_path / "reports"
    replace, nested = os.replace, []

    def interleaved(src, dst, *args, **kwargs):
        if not nested:
            nested.append("started")
            nested.append(render_report(store, out))  # the other writer, start to end
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", interleaved)
    assert render_report(store, out) == nested[1] == out / "index.html"
    assert _leftovers(out) == []


def test_a_full_disk_is_one_clear_error_and_leaves_no_partial_file(tmp_path, monkeypatch):
    store, out = _store(f"sqlite:///{tmp_path / 'atlas.db'}"), tmp_path / "reports"
    _full_disk(monkeypatch, out)
    with pytest.raises(BadInput) as raised:
        render_report(store, out)
    message = str(raised.value)
    assert "\n" not in message and f"cannot write the report to {out}: No space left on device" in message
    assert _leftovers(out) == [] and not list(out.rglob("*.html"))


def test_a_folder_that_cannot_be_written_is_one_clear_error(tmp_path, monkeypatch):
    store = _store(f"sqlite:///{tmp_path / 'atlas.db'}")
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(BadInput, match=r"^cannot write the report to .*file/reports: Not a directory; "):
        render_report(store, tmp_path / "file" / "reports")
    out = tmp_path / "reports"
    (out / "index.html").mkdir(parents=True)  # the page's name taken by a folder
    with pytest.raises(BadInput, match="^cannot write the report to .*: Is a directory; "):
        render_report(store, out)
    _full_disk(monkeypatch, out, errno.EACCES)  # as root, permissions are not enforced: the write refuses instead
    with pytest.raises(BadInput, match="^cannot write the report to .*: Permission denied; "):
        render_report(store, out)
    assert _leftovers(out) == []


_FULL_DISK_CONFTEST = '''
import errno, os
from pathlib import Path

write = Path.write_text

def failing(self, data, *args, **kwargs):  # the reports folder's disk is full
    if "reports" in self.parts:
        write(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return write(self, data, *args, **kwargs)

Path.write_text = failing
'''


def test_a_full_disk_under_pytest_is_one_line_in_the_summary(tmp_path):
    (tmp_path / "conftest.py").write_text(_FULL_DISK_CONFTEST)
    (tmp_path / "test_not_run.py").write_text(NOT_RUN)
    out = tmp_path / "reports"
    done = subprocess.run([sys.executable, "-m", "pytest", "test_not_run.py", "-p", "no:cacheprovider", "-rs",
                           f"--atlas-db=sqlite:///{tmp_path / 'atlas.db'}", f"--atlas-reports={out}"],
                          env=child_env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "INTERNALERROR" not in output and "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "cannot write the report" in line]
    assert lines == [f"no verdict report: cannot write the report to {out}: No space left on device; free some "
                     "space or choose another folder (atlas report --out DIR, pytest --atlas-reports DIR)"], output
    assert _leftovers(out) == []


def test_atlas_report_on_a_full_disk_prints_one_line_and_exits_2(tmp_path):
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    _store(url).engine.dispose()
    out = tmp_path / "reports"
    program = _FULL_DISK_CONFTEST + "\nfrom atlas.cli import main\nmain()\n"
    done = subprocess.run([sys.executable, "-c", program, "report", "--db", url, "--out", str(out)], env=child_env(),
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.splitlines() == [f"Error: cannot write the report to {out}: No space left on device; free some "
                                        "space or choose another folder (atlas report --out DIR, pytest "
                                        "--atlas-reports DIR)"]
    assert _leftovers(out) == []


def test_an_export_onto_a_full_disk_is_one_clear_error(tmp_path, monkeypatch):
    store = _store(f"sqlite:///{tmp_path / 'atlas.db'}")
    out = tmp_path / "export"
    _full_disk(monkeypatch, out)
    with pytest.raises(BadInput, match=f"^cannot write the export to {out}/.*: No space left on device; "):
        export_run(store, store.runs()[0], out, "json")
    assert _leftovers(out) == []


# --- hostile strings -------------------------------------------------------------------------------------------

class _Page(HTMLParser):
    """A page's text nodes, each with the elements it sits in (tag and attributes), and its stylesheet."""

    VOID = {"br", "meta", "img", "hr", "input", "link", "col", "wbr"}

    def __init__(self, html: str):
        super().__init__()
        self.open: list[tuple[str, dict]] = []
        self.texts: list[tuple[str, list]] = []
        self.css = ""
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.open.append((tag, {k: v or "" for k, v in attrs}))

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        for i in range(len(self.open) - 1, -1, -1):
            if self.open[i][0] == tag:
                del self.open[i:]
                return

    def handle_data(self, data):
        if self.open and self.open[-1][0] == "style":
            self.css += data
        elif data.strip():
            self.texts.append((data, list(self.open)))


def _compound_matches(compound: str, element: tuple[str, dict]) -> bool:
    tag, attrs = element
    name = re.match(r"[\w*-]*", compound)[0]
    classes = re.findall(r"\.([\w-]+)", compound)
    present = re.findall(r"\[([\w-]+)\]", compound)
    return (name in ("", "*", tag) and set(classes) <= set(attrs.get("class", "").split())
            and all(a in attrs for a in present))


def _matches(selector: str, path: list) -> bool:
    """Does ``selector`` (compounds joined by descendant combinators) match the last element of ``path``?"""
    *ancestors, last = selector.split()
    if not path or not _compound_matches(last, path[-1]):
        return False
    i = len(path) - 2
    for compound in reversed(ancestors):
        while i >= 0 and not _compound_matches(compound, path[i]):
            i -= 1
        if i < 0:
            return False
        i -= 1
    return True


def _computed(css: str, path: list, prop: str) -> str | None:
    """The value of an inherited property for the innermost element of ``path``: the most specific (then last)
    declaration matching it, else its parent's."""
    rules = []
    for order, (selectors, body) in enumerate(re.findall(r"([^{}]+)\{([^}]*)\}", re.sub(r"/\*.*?\*/", "", css,
                                                                                          flags=re.S))):
        declared = dict((k.strip(), v.strip()) for k, v in (d.split(":", 1) for d in body.split(";") if ":" in d))
        if prop in declared:
            rules += [(s.strip(), declared[prop], order) for s in selectors.split(",")]
    for depth in range(len(path), 0, -1):
        found = [((s.count("#"), s.count(".") + s.count("["), len(re.findall(r"(?:^|\s)[a-z]", s))), order, value)
                 for s, value, order in rules if _matches(s, path[:depth])]
        if found:
            return max(found)[2]
    return None


def test_a_20000_character_id_wraps_inside_the_page(tmp_path):
    store = _store(f"sqlite:///{tmp_path / 'atlas.db'}", model=LONG, prediction=LONG, corpus=LONG)
    out = tmp_path / "reports"
    render_report(store, out)
    css = "body { overflow-wrap: anywhere; } td { overflow-wrap: break-word; } .x td { overflow-wrap: normal; }"
    body, td = ("body", {}), ("td", {})  # first, the cascade read as a browser reads it
    assert _computed(css, [body, ("p", {})], "overflow-wrap") == "anywhere"
    assert _computed(css, [body, td, ("a", {})], "overflow-wrap") == "break-word"
    assert _computed(css, [body, ("div", {"class": "x y"}), td], "overflow-wrap") == "normal"
    css = "summary.reason { white-space: nowrap; } details[open] summary.reason { white-space: normal; }"
    assert _computed(css, [("details", {"open": ""}), ("summary", {"class": "reason"})], "white-space") == "normal"
    checked = 0
    for page in (out / "index.html", out / "figures.html", *(out / "predictions").glob("*.html")):
        parsed = _Page(page.read_text(encoding="utf-8"))
        for text, path in parsed.texts:
            if max(map(len, text.split()), default=0) < 200 or {"svg", "title"} & {tag for tag, _ in path}:
                continue  # short words wrap anyway; an SVG scales to its figure, the title is not laid out
            assert _computed(parsed.css, path, "overflow-wrap") == "anywhere", (page.name, [t for t, _ in path])
            nowrap = _computed(parsed.css, path, "white-space") == "nowrap"
            assert not nowrap or _computed(parsed.css, path, "text-overflow") == "ellipsis", [t for t, _ in path]
            checked += 1
    assert checked >= 10  # the id, model and corpus in the tables, lists and captions of both pages
    record("20,000-character strings checked in report tables (all wrap)", checked)


def test_bidirectional_text_cannot_reorder_the_page_or_a_figure(tmp_path):
    model, corpus = f"tiny{RLO}gpt2", f"{HEBREW}-corpus"
    store = _store(f"sqlite:///{tmp_path / 'atlas.db'}", model=model, prediction=f"P{RLO}x{PDF}", corpus=corpus)
    out = tmp_path / "reports"
    render_report(store, out)
    for page in (out / "index.html", out / "figures.html", *(out / "predictions").glob("*.html")):
        html = page.read_text(encoding="utf-8")
        assert not re.search("[\u202a-\u202e]", html), page.name  # overrides and embeddings shown, never obeyed
        assert "tiny&lt;U+202E&gt;gpt2" in html
        assert page.name == "figures.html" or "P&lt;U+202E&gt;x&lt;U+202C&gt;" in html  # (figures name no prediction)
        isolates = re.findall("\u2068([^\u2068\u2069]*)\u2069", html)
        assert f"{HEBREW}-corpus" in isolates  # a value with right-to-left letters, isolated from its neighbours
        assert html.count(HEBREW) == sum(i.count(HEBREW) for i in isolates)  # every occurrence (figures: the label)
    figure = [t for t, path in _Page((out / "index.html").read_text(encoding="utf-8")).texts
              if "svg" in {tag for tag, _ in path} and "tiny" in t]
    assert figure and all("tiny<U+202E>gpt2" in t for t in figure), figure
    assert bidi_safe(f"a{RLO}b") == "a<U+202E>b"
    record("bidirectional controls shown, not obeyed, in report pages", 1)


