import base64
import json
import re
import shutil
import struct
import subprocess
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from atlas import Store, render_report
from atlas._import import import_sheet, reference_sheet
from atlas._judgment import judge
from atlas._store import ProtocolEvent, Run, VerdictRecord, utcnow

EVIL = "<script>alert('x')</script>"


def make_run(**kw):
    fields = dict(instrument="perplexity", instrument_version="1", model="tiny", model_revision="r", corpus="starter",
                  corpus_hash="sha256:abc", settings={"bos_policy": "prepend"}, settings_hash="s", device="cpu",
                  dtype="float32", seed=0, started_at=utcnow(), ended_at=utcnow(), status="complete")
    return Run(**{**fields, **kw})


def make_verdict(**kw):
    fields = dict(prediction="P5d", version="abc123", form="general", claim="c", source="seed", model="tiny",
                  corpus="starter-v1", corpus_hash="sha256:abc", profile="quick", outcome="supported", effect=0.5,
                  ci_low=0.1, ci_high=0.9, n=3, criterion={"statistic": "rho", "direction": ">", "threshold": 0},
                  criterion_hash="h")
    return VerdictRecord(**{**fields, **kw})


CURVATURE_RUNS = (("smoothness", ("smoothness", "smoothness_gram")),
                  ("tightness", ("tightness", "tightness_mgda", "tightness_pairs")),
                  ("elasticity", ("elasticity", "elasticity_share")), ("stiffness", ("stiffness", "stiffness_radii")),
                  ("hessian_coupling", ("hessian_coupling", "hessian_coupling_layers")))


@pytest.fixture(scope="module")
def report(tmp_path_factory, instrument_tables):
    """A store with a measured run of every instrument, the seed record, verdicts on two corpora (one not
    run), events and judgments."""
    out = tmp_path_factory.mktemp("report")
    store = Store(f"sqlite:///{out / 'atlas.db'}")
    domains = pd.DataFrame({"domain": ["poetry", "spanish"], "n": [3, 3], "n_tokens": [90, 80], "ppl": [40.0, 70.0],
                            "ci_low": [35.0, 60.0], "ci_high": [45.0, 80.0], "bits_per_byte": [1.2, 1.5]})
    layers = pd.DataFrame({"layer": [0, 1, 2], "variant": ["seed_flattened"] * 3, "coupling": [0.41, 0.52, 0.47],
                           "ci_low": [0.4, 0.5, 0.45], "ci_high": [0.42, 0.55, 0.5], "n_passages": [3] * 3})
    ppl = store.write_run(make_run(), {"perplexity_domains": domains})
    cpl = store.write_run(make_run(instrument="coupling", settings={}), {"coupling": layers})
    import_sheet(store, reference_sheet("gpt2-april-2026"))
    store.write_verdict(make_verdict(claim=EVIL, run_ids=[cpl]))
    store.write_verdict(make_verdict(corpus="domains-v1[:24/domain]", corpus_hash="sha256:def", outcome="refuted",
                                     effect=-0.5, ci_low=-0.9, ci_high=-0.2, code_version="0123456789abcdef"))
    store.write_verdict(make_verdict(prediction="P1a-named", model="gpt2", outcome="not_run", effect=None, ci_low=None,
                                     ci_high=None, n=None, reason=f"model 'gpt2' is not available: {EVIL}"))
    for name, tables in (("ablation", ("ablation", "ablation_layers")), ("hessian", ("hessian",)),
                         ("gradient", ("gradient",)), ("interpolation", ("interpolation", "interpolation_barrier"))):
        store.write_run(make_run(instrument=name, settings={"other": "tiny-b"} if name == "interpolation" else {}),
                        {t: instrument_tables[t] for t in tables})
    for name, tables in CURVATURE_RUNS:
        store.write_run(make_run(instrument=name, settings={}), {t: instrument_tables[t] for t in tables})
    for i, action in enumerate(["measured", "reused", "refused"]):
        store.write_event(ProtocolEvent(session="s-one", prediction="P5d", instrument="coupling", model="tiny",
                                        corpus_hash="sha256:abc", action=action, run_id=cpl if i < 2 else None,
                                        reason=f"step {i}"))
    store.write_event(ProtocolEvent(session="s-two", instrument="perplexity", model="tiny", corpus_hash="sha256:abc",
                                    action="failed", reason="model unavailable"))
    judge(store, ppl, "territory", "elevated", by="Ada <Technician>", note=EVIL, row="poetry")
    judge(store, "1", "interpretation", "the dip is architectural", by="Grace")
    index = render_report(store, out / "reports")
    return index.parent, ppl, cpl


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def pages_of(root: Path) -> list[Path]:
    return [root / "index.html", *root.glob("runs*.html"), *root.glob("log*.html"), root / "versions.html",
            root / "figures.html", *(root / "terms").glob("*.html"), *(root / "predictions").glob("*.html")]


def the_script(html: str) -> str:
    """The report's one script (``_tables.js.j2``), which every page has once, inline."""
    scripts = re.findall(r"<script[^>]*>.*?</script>", html, re.S)
    assert len(scripts) == 1 and scripts[0].startswith("<script>"), scripts
    return scripts[0]


def test_index_and_a_page_per_term(report):
    root, _, _ = report
    pages = sorted(p.stem for p in (root / "terms").glob("*.html"))
    assert len(pages) == 18 and "basin_connectivity" in pages
    index = text(root / "index.html")
    for tid in pages:
        assert f'href="terms/{tid}.html"' in index


def test_everything_is_escaped_and_self_contained(report):
    root, _, _ = report
    scripts = set()
    for page in pages_of(root):
        html = text(page)
        scripts.add(the_script(html))
        assert " src=" not in html and "<link" not in html
        assert not re.search(r'href="https?:', html)
    assert len(scripts) == 1 and not re.search(r"https?:|fetch|XMLHttpRequest|import\(", scripts.pop())
    index = text(root / "index.html")
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in index and "Ada &lt;Technician&gt;" in index


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "href" in attrs:
            self.hrefs.append(attrs["href"])
        if "id" in attrs:
            self.ids.add(attrs["id"])


def test_every_link_points_at_a_page_and_anchor_that_exist(report):
    root, _, _ = report
    pages = pages_of(root)
    parsed = {}
    for page in pages:
        parsed[page.resolve()] = p = _Links()
        p.feed(text(page))
    checked = 0
    for page in pages:
        for href in parsed[page.resolve()].hrefs:
            target, _, anchor = href.partition("#")
            dest = (page.parent / target).resolve() if target else page.resolve()
            assert dest in parsed, f"{page.name}: {href} points nowhere"
            assert not anchor or anchor in parsed[dest].ids, f"{page.name}: no anchor {href}"
            checked += 1
    assert checked > 100


def test_verdicts_link_to_their_terms_and_show_their_interpretation(report):
    root, _, cpl = report
    index = text(root / "index.html")
    row = index[index.index('id="verdict-1"'):]
    row = row[:row.index("</tr>")]
    assert 'href="terms/coupling.html"' in row and "the dip is architectural" in row and "Grace" in row
    coupling = text(root / "terms" / "coupling.html")
    assert "P5d" in coupling and f'href="../runs.html#run-{cpl}"' in coupling
    assert "P5d" not in text(root / "terms" / "perplexity.html")


def test_term_pages_show_the_framework(report):
    root, _, _ = report
    terrain = text(root / "terms" / "slick_sticky.html")
    assert "Traction" in terrain and "name reconstructed" in terrain and "gives no formula" in terrain
    assert "Keskar et al. (2016)" in terrain and "hessian" in terrain
    density = text(root / "terms" / "density.html")
    assert "KL divergence measures model inadequacy to data" in density and "D_KL(P_data ‖ P_model)" in density
    assert "perplexity_domains.territory" in density  # the Technician field that reads it
    memory = text(root / "terms" / "memory.html")
    assert "no instrument yet" not in memory and "matched held-out loss" in memory


def test_technician_fields_judged_and_awaiting(report):
    root, ppl, _ = report
    index = text(root / "index.html")
    section = index[index.index('id="technician"'):]
    assert "awaiting Technician" in section
    assert "<b>elevated</b>" in section and "Ada &lt;Technician&gt;" in section
    assert "seed sheet April 2026" in section and "archaeological" in section  # the seed's calls, imported
    poetry = section[section.index(f"run-{ppl}"):]
    assert re.search(r"<td>poetry</td><td><b>elevated</b></td>", poetry)
    assert re.search(r"<td>spanish</td><td colspan=\"4\"><span class=\"awaiting\">awaiting Technician", poetry)


def test_protocol_log_by_session_newest_first_each_in_order(report):
    root, _, _ = report
    page = text(root / "log.html")
    log = page[page.index('<table class="sortable">'):]
    assert log.index("s-two") < log.index("s-one")
    one = log[log.index("s-one"):]
    assert one.index("step 0") < one.index("step 1") < one.index("step 2")
    assert ">measured<" in one and ">reused<" in one and ">refused<" in one and "model unavailable" in log


def test_seed_record_beside_replications(report):
    root, _, _ = report
    index, figures = text(root / "index.html"), text(root / "figures.html")
    start = figures.index('<section id="coupling"')
    coupling = figures[start:figures.index("</section>", start)]
    assert "<svg" in coupling and "polyline" in coupling
    assert re.search(r"<td>0</td><td>0\.41</td>.*?<td>0\.61</td>", coupling, re.S)  # replicated beside seed
    assert "Anomalous dip" in coupling
    perplexity = figures[figures.index('id="perplexity"'):figures.index('id="coupling"')]
    assert "seed 58.6" in perplexity  # poetry's seed tick
    imported = index[index.index('id="imported"'):index.index('id="vocabulary"')]
    assert "ONE UN-REPLICATED FIRST-PASS RUN" in imported and "102.5" in imported


def svgs(html: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", html, re.S)


class _Tags(HTMLParser):
    """Every start tag with its attributes, and whether every opened element was closed."""

    VOID = {"meta", "br", "hr", "img", "input", "link", "wbr"}  # HTML's; SVG shapes close with "/>"

    def __init__(self):
        super().__init__()
        self.tags, self.open = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()


def test_every_page_is_well_formed_and_loads_nothing_from_outside(report):
    root, _, _ = report
    for page in pages_of(root):
        tags = _Tags()
        tags.feed(text(page))
        assert tags.open == [], f"{page.name}: unclosed {tags.open}"
        for tag, attrs in tags.tags:
            for attr in ("src", "href", "xlink:href"):
                assert not re.match(r"\s*(https?:)?//", attrs.get(attr) or ""), f"{page.name}: <{tag} {attr}>"
            assert tag not in ("link", "iframe", "img", "object", "embed"), f"{page.name}: <{tag}>"
            assert tag != "script" or not attrs, f"{page.name}: <script {attrs}>"  # the one inline script


def test_the_index_opens_with_the_overview(report):
    root, _, _ = report
    index = text(root / "index.html")
    overview = index[index.index('id="overview"'):index.index('id="by-corpus"')]
    assert index.index('id="overview"') < index.index('id="verdicts"') < index.index('id="figures"')
    assert 'id="perplexity"' not in index and 'href="figures.html#perplexity"' in index  # drawn on a page of its own
    for outcome, count in (("supported", 1), ("refuted", 1), ("inconclusive", 0), ("not_run", 1)):
        assert re.search(rf'class="count {outcome}"><b>{count}</b>', overview), outcome
    [forest] = svgs(overview)
    assert forest.count('class="threshold"') >= 3  # the legend's and one per row
    assert forest.count('class="claim"') == 2 and "claimed side" in forest  # each row's claimed side, shaded
    assert "P5d" in forest and "P1a-named" not in forest  # not run: listed, not drawn
    assert 'href="predictions/P5d.html"' in forest


def test_not_run_predictions_are_one_list_with_the_reason_collapsed(report):
    root, _, _ = report
    index = text(root / "index.html")
    overview = index[index.index('id="overview"'):index.index('id="by-corpus"')]
    listing = overview[overview.index('class="notrun"'):]
    assert "P1a-named" in listing and "<details>" in listing
    details = listing[listing.index("<details>"):listing.index("</details>")]
    assert "model &#39;gpt2&#39; is not available" in details and "&lt;script&gt;" in details
    full = index[index.index('id="verdicts"'):index.index('id="figures"')]
    assert "P1a-named" not in full  # the full table holds the verdicts reached


def test_a_prediction_on_two_corpora_stands_side_by_side(report):
    root, _, _ = report
    index = text(root / "index.html")
    table = index[index.index('id="by-corpus"'):index.index('id="verdicts"')]
    header = table[table.index("<tr>"):table.index("</tr>")]
    assert header.index("starter-v1") < header.index("domains-v1[:24/domain]")
    [row] = [r for r in table.split("<tr>") if 'href="predictions/P5d.html"' in r]
    assert row.index(">supported<") < row.index(">refuted<")  # one row, a column per corpus
    assert row.count("—") == 0


def test_a_figure_for_every_instrument_run(report):
    root, _, _ = report
    index = text(root / "figures.html")
    for section, label in (("perplexity", "perplexity (exp of mean NLL"), ("coupling", "coupling (Pearson r)"),
                           ("ablation", "mean ΔPPL per layer"), ("hessian", "eigenvalue λ of ∇²L"),
                           ("gradient", "mean next-token entropy (nats)"), ("interpolation", "max − chord")):
        start = index.index(f'<section id="{section}"')
        body = index[start:index.index("</section>", start)]
        [svg] = svgs(body)
        assert label in svg and "tiny" in svg and "n = " in svg, section


def test_a_figure_for_every_curvature_instrument_run(report):
    root, _, _ = report
    index = text(root / "figures.html")
    for section, label in (("smoothness", "B_simple = tr(Σ) / |G|²"), ("tightness", "MGDA min-norm ratio"),
                           ("elasticity", "elastic share"), ("stiffness", "radius r"),
                           ("hessian_coupling", "mean c_ab (log scale)")):
        start = index.index(f'<section id="{section}"')
        body = index[start:index.index("</section>", start)]
        [svg] = svgs(body)
        assert label in svg and "tiny" in svg and "n = " in svg, section


def test_every_figure_kind_has_a_macro_that_draws_it():
    from jinja2 import Environment, PackageLoader

    from atlas._figures import FIGURES

    module = Environment(loader=PackageLoader("atlas", "templates")).get_template("_figures.html.j2").module
    for kind in (*FIGURES, "forest", "history"):
        assert callable(getattr(module, kind, None)), kind


def test_a_page_per_prediction_with_its_history(report):
    root, _, _ = report
    page = text(root / "predictions" / "P5d.html")
    assert page.count('<tr id="verdict-') == 2
    panels = svgs(page[page.index('id="history"'):page.index('id="evidence"')])
    assert len(panels) == 2  # starter-v1 and domains-v1, each over time
    evidence = page[page.index('id="evidence"'):page.index('id="all"')]
    assert "Coupling by layer" in "".join(svgs(evidence))  # the figure of the run the latest verdict read
    assert "tiny · starter-v1 · profile quick" in panels[0] and "tiny · domains-v1[:24/domain]" in panels[1]
    assert "0123456789ab" in page and 'href="../index.html"' in page  # the code version that judged it
    index = text(root / "index.html")
    assert 'href="predictions/P1a-named.html"' in index
    not_run = text(root / "predictions" / "P1a-named.html")
    assert "<details>" in not_run and "&lt;script&gt;" in not_run  # the reason, collapsed and escaped


# --- the command line: verdicts keyed by what produced them, flips, export -----------------------------------


def cli(*args):
    from click.testing import CliRunner

    from atlas.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def two_corpora(tmp_path):
    """A store with P5d supported on two corpora (quick), refuted on one (full), and a not-run P1a."""
    db = f"sqlite:///{tmp_path / 'v.db'}"
    store = Store(db)
    store.write_verdict(make_verdict())
    store.write_verdict(make_verdict(corpus="domains-v1[:24/domain]", corpus_hash="sha256:def"))
    store.write_verdict(make_verdict(corpus="domains-v1", corpus_hash="sha256:d0f", profile="full", outcome="refuted",
                                     effect=-0.25, ci_low=-0.5, ci_high=-0.1, n=480))
    store.write_verdict(make_verdict(prediction="P1a-named", model="gpt2", outcome="not_run", effect=None,
                                     ci_low=None, ci_high=None, n=None, reason="no gpt2"))
    return db


def test_verdicts_plain_output_has_a_header_aligned_columns_and_the_corpus(two_corpora):
    result = cli("verdicts", "--db", two_corpora)
    assert result.exit_code == 0, result.output
    header, *lines = result.output.splitlines()
    assert header.split() == ["prediction", "version", "form", "model", "corpus", "profile", "outcome", "after",
                              "Holm", "effect", "95%", "CI", "criterion", "n", "scope"]
    assert len(lines) == 4
    for column in ("corpus", "profile", "outcome"):  # left-aligned: every row starts the column where the header does
        at = header.index(column)
        assert all(line[at - 1] == " " and line[at] != " " for line in lines), column
    not_run = next(line for line in lines if line.startswith("P1a-named"))
    assert "not run" in not_run and not_run.count("—") == 5  # no adjustment, effect, CI, n, scope
    full = next(line for line in lines if " full " in line)
    assert "domains-v1 " in full and "refuted" in full and "[-0.5, -0.1]" in full and " 480 " in full


def test_verdicts_filter_by_corpus_and_profile(two_corpora):
    def predictions(*args):
        result = cli("verdicts", "--db", two_corpora, "--json", *args)
        return sorted((v["corpus"], v["profile"]) for v in json.loads(result.output)["verdicts"])

    assert predictions("--corpus", "domains-v1") == [("domains-v1", "full"), ("domains-v1[:24/domain]", "quick")]
    assert predictions("--corpus", "domains-v1", "--profile", "quick") == [("domains-v1[:24/domain]", "quick")]
    assert predictions("--corpus", "../shared/corpora/domains-v1.jsonl", "--profile", "full") == [
        ("domains-v1", "full")]
    assert predictions("--corpus", "sha256:de") == [("domains-v1[:24/domain]", "quick")]
    assert predictions("--corpus", "starter-v1") == [("starter-v1", "quick"), ("starter-v1", "quick")]
    result = cli("verdicts", "--db", two_corpora, "--profile", "nightly")  # a typo, not an empty answer
    assert result.exit_code == 2 and "'nightly' is not one of 'quick', 'full'" in result.output


def test_a_flip_between_two_nights_is_printed_written_and_exits_3(tmp_path):
    nights = []
    for night, outcome in enumerate(("supported", "inconclusive")):
        db = f"sqlite:///{tmp_path / f'night{night}.db'}"
        store = Store(db)
        store.write_verdict(make_verdict(outcome=outcome, ci_low=0.1 if night == 0 else -0.1))
        store.write_verdict(make_verdict(prediction="P0b", outcome="refuted", effect=1.01, ci_low=1.0, ci_high=1.02))
        store.write_verdict(make_verdict(prediction="P0b", profile="full" if night else "quick", outcome="refuted"))
        path = tmp_path / f"night{night}.json"
        path.write_text(cli("verdicts", "--db", db, "--json").output)
        nights.append(path)
    out = tmp_path / "reports" / "flips.json"
    result = cli("diff", *nights, "--out", out)
    assert result.exit_code == 3, result.output
    [flip_line] = [line for line in result.output.splitlines() if line.startswith("FLIP")]
    assert "P5d on tiny · starter-v1 · quick: supported -> inconclusive" in flip_line and "[-0.1, 0.9]" in flip_line
    written = json.loads(out.read_text())
    [flip] = written["flips"]
    assert (flip["prediction"], flip["from"], flip["to"], flip["version_changed"]) == (
        "P5d", "supported", "inconclusive", False)
    assert written["compared"] == 2  # P5d and P0b quick; P0b full appeared and nothing flipped there
    assert [(a["prediction"], a["profile"]) for a in written["appeared"]] == [("P0b", "full")]
    same = cli("diff", nights[1], nights[1], "--out", out)
    assert same.exit_code == 0 and "0 flip(s)" in same.output and json.loads(out.read_text())["flips"] == []


def test_diff_of_a_file_that_is_not_a_verdicts_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": []}')
    result = cli("diff", bad, tmp_path / "missing.json", "--out", tmp_path / "f.json")
    assert result.exit_code == 1 and 'expected {"verdicts": [...]}' in result.output
    good = tmp_path / "good.json"
    good.write_text('{"verdicts": []}')
    result = cli("diff", good, tmp_path / "missing.json", "--out", tmp_path / "f.json")
    assert result.exit_code == 1 and "missing.json: no such file" in result.output


def test_export_a_run_with_its_provenance(report, tmp_path):
    root, ppl, _ = report
    db = f"sqlite:///{root.parent / 'atlas.db'}"
    result = cli("export", ppl[:8], "--format", "csv", "--out", tmp_path, "--db", db)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / ppl / "perplexity_domains.csv", keep_default_na=False)
    assert list(frame["domain"]) == ["poetry", "spanish"] and frame["ppl"].tolist() == [40.0, 70.0]
    assert list(frame.columns[:5]) == ["run_id", "instrument", "model", "corpus", "profile"]  # joinable as it is
    assert set(frame["run_id"]) == {ppl} and set(frame["model"]) == {"tiny"} and set(frame["profile"]) == {""}
    sidecar = json.loads((tmp_path / ppl / "provenance.json").read_text())
    assert sidecar["run"]["model"] == "tiny" and sidecar["run"]["corpus_hash"] == "sha256:abc"
    assert sidecar["run"]["settings"] == {"bos_policy": "prepend"} and sidecar["run"]["started_at"].startswith("20")
    assert sidecar["tables"]["perplexity_domains"]["rows"] == 2
    columns = sidecar["tables"]["perplexity_domains"]["columns"]
    assert "passages" in columns["n"] and list(frame.columns) == list(columns)  # every column described, in order
    assert all(columns.values()) and columns["run_id"].startswith("the run that measured the row")
    result = cli("export", ppl, "--format", "json", "--table", "perplexity_domains", "--out", tmp_path / "j",
                 "--db", db)
    rows = json.loads((tmp_path / "j" / ppl / "perplexity_domains.json").read_text())
    assert result.exit_code == 0 and rows[0]["domain"] == "poetry" and rows[0]["ci_low"] == 35.0


def test_export_a_prediction_writes_its_runs_and_verdicts(report, tmp_path):
    root, _, cpl = report
    result = cli("export", "--prediction", "P5", "--out", tmp_path, "--db", f"sqlite:///{root.parent / 'atlas.db'}")
    assert result.exit_code == 0, result.output
    coupling = pd.read_csv(tmp_path / cpl / "coupling.csv")
    assert set(coupling["run_id"]) == {cpl} and set(coupling["profile"]) == {"quick"}  # the verdicts' profile
    verdicts = json.loads((tmp_path / "P5d.verdicts.json").read_text())["verdicts"]
    assert {v["corpus"] for v in verdicts} == {"starter-v1", "domains-v1[:24/domain]"}


def test_export_errors_name_the_problem(report, tmp_path, monkeypatch):
    root, ppl, _ = report
    db = f"sqlite:///{root.parent / 'atlas.db'}"
    assert cli("export", "--out", tmp_path, "--db", db).exit_code == 2  # neither a run nor a prediction
    result = cli("export", "--prediction", "P9", "--out", tmp_path, "--db", db)
    assert result.exit_code == 1 and "no verdict of prediction 'P9'" in result.output
    result = cli("export", ppl, "--table", "hessian", "--out", tmp_path, "--db", db)
    assert result.exit_code == 1 and "has no table hessian" in result.output
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    result = cli("export", ppl, "--format", "parquet", "--out", tmp_path / "p", "--db", db)
    assert result.exit_code == 1 and "pip install 'atlas-landscape[export]'" in result.output
    assert not (tmp_path / "p").exists()  # nothing written


def test_export_parquet_keeps_the_columns(report, tmp_path):
    pytest.importorskip("pyarrow", reason="parquet export needs the `export` extra (pyarrow)")
    root, ppl, _ = report
    db = f"sqlite:///{root.parent / 'atlas.db'}"
    result = cli("export", ppl, "--format", "parquet", "--out", tmp_path, "--db", db)
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(tmp_path / ppl / "perplexity_domains.parquet")
    assert frame["n"].dtype.kind == "i" and frame["ppl"].tolist() == [40.0, 70.0]


# --- in a real browser ---------------------------------------------------------------------------------------

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)

# Appended to a copy of the page: what the layout engine measured, written where --dump-dom shows it.
LAYOUT_PROBE = """<script>
(function () {
  function box(sel) { var e = document.querySelector(sel); if (!e) return null;
    var r = e.getBoundingClientRect(); return {top: r.top, bottom: r.bottom, width: r.width, height: r.height}; }
  var probe = {clientWidth: document.documentElement.clientWidth, scrollWidth: document.documentElement.scrollWidth,
               counts: box(".counts"), forest: box("#forest svg"), overview: box("#overview"),
               height: document.documentElement.scrollHeight,
               resources: performance.getEntriesByType("resource").map(function (e) { return e.name; })};
  document.body.setAttribute("data-probe", JSON.stringify(probe));
})();
</script>"""

# A page that draws the screenshot (a data: URL, so the canvas stays readable) and counts its pixels.
PIXEL_PROBE = """<html><body><canvas id="c"></canvas><img id="i" src="data:image/png;base64,{png}"><script>
var img = document.getElementById("i");
function count() {{
  var c = document.getElementById("c"); c.width = img.naturalWidth; c.height = img.naturalHeight;
  var ctx = c.getContext("2d"); ctx.drawImage(img, 0, 0);
  var d = ctx.getImageData(0, 0, c.width, c.height).data, ink = 0, inBox = 0, colours = {{}};
  var box = {box};
  for (var k = 0; k < d.length; k += 4) {{
    var p = k / 4, x = p % c.width, y = Math.floor(p / c.width);
    if (d[k] < 235 || d[k + 1] < 235 || d[k + 2] < 235) {{
      ink++; if (x >= box.left && x < box.right && y >= box.top && y < box.bottom) inBox++; }}
    colours[(d[k] >> 4) + "," + (d[k + 1] >> 4) + "," + (d[k + 2] >> 4)] = 1;
  }}
  document.body.setAttribute("data-pixels", JSON.stringify({{width: c.width, height: c.height, ink: ink,
    inBox: inBox, boxArea: (box.right - box.left) * (box.bottom - box.top), colours: Object.keys(colours).length}}));
}}
if (img.complete) count(); else img.onload = count;
</script></body></html>"""


def chromium(tmp_path, *args) -> str:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
               "--window-size=1280,900", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def dumped(html: str, attribute: str) -> dict:
    found = re.search(rf'{attribute}="([^"]*)"', html)
    assert found, f"the page did not write {attribute}"
    return json.loads(unescape(found[1]))


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)")
def test_the_report_in_headless_chromium(report, tmp_path):
    """At 1280 x 900: no sideways overflow, the counts and the forest plot on the first screen, nothing loaded
    from the network, and a screenshot with ink where the forest plot is."""
    root, _, _ = report
    index = root / "index.html"
    probe_page = root / "index.probe.html"  # beside the index, so that relative links resolve as they do
    probe_page.write_text(text(index).replace("</body>", LAYOUT_PROBE + "</body>"), encoding="utf-8")
    try:
        layout = dumped(chromium(tmp_path, "--dump-dom", probe_page.as_uri()), "data-probe")
    finally:
        probe_page.unlink()
    assert layout["scrollWidth"] <= layout["clientWidth"], layout  # no horizontal overflow
    assert layout["counts"]["bottom"] <= 900 and layout["forest"]["height"] > 100, layout
    assert layout["forest"]["bottom"] <= 900, layout  # the whole forest plot without scrolling (small store)
    assert not [r for r in layout["resources"] if re.match(r"https?:", r)], layout["resources"]

    shot = tmp_path / "index-1280x900.png"
    chromium(tmp_path, "--hide-scrollbars", f"--screenshot={shot}", index.as_uri())
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1280, 900)
    forest = layout["forest"]
    box = {"left": 0, "right": 1280, "top": int(forest["top"]), "bottom": int(forest["bottom"])}
    checker = tmp_path / "pixels.html"
    checker.write_text(PIXEL_PROBE.format(png=base64.b64encode(png).decode(), box=json.dumps(box)), encoding="utf-8")
    pixels = dumped(chromium(tmp_path, "--dump-dom", checker.as_uri()), "data-pixels")
    assert (pixels["width"], pixels["height"]) == (1280, 900)
    assert pixels["ink"] > 0.02 * 1280 * 900 and pixels["colours"] > 20, pixels  # not blank: text, bars, colours
    assert pixels["inBox"] > 0.01 * pixels["boxArea"], pixels  # the forest plot is drawn where the layout put it


def _sessions(store: Store, sessions: range) -> None:
    """``sessions`` pytest runs of five predictions: each measures two runs (one a Lab training with a long
    settings string), logs its steps and judges every prediction again."""
    recipe = {"architecture": {"layers": 1, "d_model": 64}, "data": {"p": 97}, "notes": "x" * 7800}
    for s in sessions:
        run = store.write_run(make_run(settings_hash=f"s{s}"), {})
        store.write_run(make_run(instrument="lab", settings={"recipe": recipe, "seed": s}, settings_hash=f"l{s}"), {})
        for action in ("measured", "reused"):
            store.write_event(ProtocolEvent(session=f"session-{s}", prediction="P5d", instrument="perplexity",
                                            model="tiny", corpus_hash="sha256:abc", action=action, run_id=run))
        for p in range(5):
            store.write_verdict(make_verdict(prediction=f"P{p}", session=f"session-{s}", effect=0.5 + s / 1000))


@pytest.fixture(scope="module")
def histories(tmp_path_factory):
    """The report of one session and of a hundred, side by side."""
    out = tmp_path_factory.mktemp("histories")
    indexes = {}
    for count in (1, 100):
        store = Store(f"sqlite:///{out / f'{count}.db'}")
        _sessions(store, range(count))
        indexes[count] = render_report(store, out / f"reports-{count}")
    return indexes


def test_the_front_page_does_not_grow_with_sessions(histories):
    """What grows with every session (runs, the protocol log) is on pages of its own: after 100 sessions the index
    is about as long as after one."""
    one, hundred = (len(text(histories[n])) for n in (1, 100))
    assert hundred < 1.2 * one, (one, hundred)


def _reachable(index: Path) -> dict[Path, str]:
    """Every page reached by following links from ``index``, with its text."""
    found, todo = {}, [index.resolve()]
    while todo:
        page = todo.pop()
        if page in found:
            continue
        found[page] = html = text(page)
        links = _Links()
        links.feed(html)
        todo += [(page.parent / href.partition("#")[0]).resolve() for href in links.hrefs if href.partition("#")[0]]
    return found


def test_every_page_is_bounded_and_every_session_and_run_reachable(histories):
    """After 100 sessions (200 runs, 200 events) the runs and the protocol log are cut into pages, each under a
    bound however many sessions there are; following links from the index reaches every session and every run, and
    each page of a list links to every other."""
    from atlas._report import RUNS_PER_PAGE, SESSIONS_PER_PAGE

    root = histories[100].parent
    logs, runs = sorted(root.glob("log*.html")), sorted(root.glob("runs*.html"))
    assert len(logs) == -(-100 // SESSIONS_PER_PAGE) and len(runs) == -(-200 // RUNS_PER_PAGE)
    pages = _reachable(histories[100])
    assert set(logs) | set(runs) | {root / "versions.html"} <= set(pages)
    for page in [*logs, *runs, root / "versions.html", root / "index.html"]:
        assert page.stat().st_size < 150_000, (page.name, page.stat().st_size)
    shown = "".join(pages[p] for p in logs)
    assert all(f'id="session-session-{s}"' in shown for s in range(100))
    assert sum(pages[p].count('<tr id="run-') for p in runs) == 200
    newest = text(root / "log.html")
    assert newest.index("session-99") < newest.index("session-98") and "session-0<" not in newest
    for page in [*logs, *runs]:
        stem = page.stem.split("-")[0]
        assert all(f'href="{other.name}"' in pages[page] for other in root.glob(f"{stem}*.html") if other != page)
    lab = text(root / "runs.html")
    assert "x" * 300 not in lab and "more characters)" in lab  # a Lab recipe's long notes are cut


def test_tables_sort_and_filter_where_they_grow(report, histories):
    """The runs, the protocol log, the versions and the verdict tables are sortable (header in <thead>, rows in
    <tbody>); dates and effects sort by their data-sort key, not by the text shown."""
    root, _, _ = report
    for page, tables in (("runs.html", 1), ("log.html", 1), ("versions.html", 1), ("index.html", 2),
                         ("predictions/P5d.html", 2), ("terms/coupling.html", 2)):
        html = text(root / page)
        assert html.count('<table class="sortable">') == tables, page
        for table in re.findall(r'<table class="sortable">.*?</table>', html, re.S):
            assert re.match(r'<table class="sortable">\s*<thead><tr>(<th>.*?</th>)+</tr></thead>\s*<tbody>', table,
                            re.S), (page, table[:200])
    runs = text(root / "runs.html")
    assert re.search(r'<td data-sort="\d{4}-\d\d-\d\dT[\d:.]+(\+00:00)?"><span class="muted">\d{4}', runs)
    assert re.search(r'<td data-sort="-0\.5">-0\.5\s*\[', text(root / "predictions" / "P5d.html"))
    assert 'data-sort="supported"' in text(root / "index.html")


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)")
def test_the_front_page_of_a_hundred_sessions_fits_five_screens(histories, tmp_path):
    index = histories[100]
    probe_page = index.parent / "index.probe.html"
    probe_page.write_text(text(index).replace("</body>", LAYOUT_PROBE + "</body>"), encoding="utf-8")
    layout = dumped(chromium(tmp_path, "--dump-dom", probe_page.as_uri()), "data-probe")
    assert layout["height"] <= 5 * 900 and layout["scrollWidth"] <= layout["clientWidth"], layout


# Appended to a copy of a page, after the report's script: click a header of its last sortable table (twice), type
# into the filter box above it, and write what the rows became where --dump-dom shows it.
TABLE_PROBE = """<script>
(function () {
  var tables = document.querySelectorAll("table.sortable"), table = tables[tables.length - 1];
  var th = table.tHead.rows[0].cells[%(column)d];
  function column() { return Array.prototype.map.call(table.tBodies[0].rows, function (r) {
    var c = r.cells[%(column)d]; return c.getAttribute("data-sort") || c.textContent.trim(); }); }
  var before = column(); th.click(); var up = column(), upSort = th.getAttribute("aria-sort");
  th.click(); var down = column();
  var box = table.parentNode.previousElementSibling.querySelector("input");
  box.value = %(query)s; box.dispatchEvent(new Event("input"));
  var shown = Array.prototype.filter.call(table.tBodies[0].rows, function (r) { return !r.hidden; });
  document.body.setAttribute("data-tables", JSON.stringify({before: before, up: up, down: down, upSort: upSort,
    boxes: document.querySelectorAll("label.filter input").length,
    tables: tables.length, rows: table.tBodies[0].rows.length,
    shown: shown.map(function (r) { return r.textContent; })}));
})();
</script>"""


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)")
def test_tables_sort_and_filter_in_headless_chromium(histories, tmp_path):
    """In the browser: a click sorts by the column (numbers as numbers, dates by their data-sort key), a second
    click reverses it, and the filter box hides the rows without the text typed."""
    root = histories[100].parent

    def probe(page: Path, column: int, query: str) -> dict:
        copy = page.with_name(f"probe-{page.name}")  # beside the page, so that relative links resolve as they do
        copy.write_text(text(page).replace("</body>", TABLE_PROBE % {"column": column, "query": json.dumps(query)}
                                           + "</body>"), encoding="utf-8")
        try:
            return dumped(chromium(tmp_path, "--dump-dom", copy.as_uri()), "data-tables")
        finally:
            copy.unlink()

    ids = probe(root / "predictions" / "P0.html", 0, "0.542")  # "#": the verdict ids, newest first
    numbers = [int(x) for x in ids["before"]]
    assert numbers == sorted(numbers, reverse=True) and ids["upSort"] == "ascending"
    assert [int(x) for x in ids["up"]] == sorted(numbers) and sorted(ids["up"]) != ids["up"]  # not as text
    assert [int(x) for x in ids["down"]] == numbers and ids["boxes"] == ids["tables"] == 2
    assert len(ids["shown"]) == 1 and "0.542" in ids["shown"][0]  # the verdict of session 42

    runs = probe(root / "runs.html", 7, "lab v1")  # started: ISO dates in data-sort
    assert runs["up"] == sorted(runs["before"]) and runs["down"] == sorted(runs["before"], reverse=True)
    assert runs["rows"] == 100 and len(runs["shown"]) == 50 and all("lab v1" in r for r in runs["shown"])


def test_an_empty_store_renders_an_index_that_says_what_to_run(tmp_path):
    index = render_report(Store("sqlite://"), tmp_path / "reports")
    html = text(index)
    assert "No prediction has reached a verdict yet: run <code>pytest predictions/</code>" in html
    figures = text(tmp_path / "reports" / "figures.html")
    assert "No measured ablation runs stored yet." in figures and "<svg" not in html + figures
    assert list((tmp_path / "reports" / "predictions").iterdir()) == []


def test_evidence_becomes_tables_of_values_rows_and_lists():
    from atlas._report import evidence_tables

    tables = evidence_tables({"seeds": {"s0": {"margin": 0.3, "step": 1550}, "s1": {"margin": -0.1, "step": 2000}},
                              "lambda_star": 1775.0, "lambda_star_ci": [1500.0, 2050.0], "n_unit": "seeds",
                              "pairs": [{"a": 1, "b": 2}], "domains": {"poetry": 1.5}})
    by = {t["title"]: t for t in tables}
    assert by["values"]["rows"] == [("lambda_star", 1775.0), ("n_unit", "seeds")]
    assert by["seeds"]["headers"] == ("", "margin", "step") and by["seeds"]["rows"][1] == ("s1", -0.1, 2000)
    assert by["lambda_star_ci"]["rows"] == [(1500.0, 2050.0)] and by["pairs"]["rows"] == [(1, 2)]
    assert by["domains"]["rows"] == [("poetry", 1.5)]

