import re
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


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A store with a measured perplexity and coupling run, the seed record, a verdict, events and judgments."""
    out = tmp_path_factory.mktemp("report")
    store = Store(f"sqlite:///{out / 'atlas.db'}")
    domains = pd.DataFrame({"domain": ["poetry", "spanish"], "n": [3, 3], "n_tokens": [90, 80], "ppl": [40.0, 70.0],
                            "ci_low": [35.0, 60.0], "ci_high": [45.0, 80.0], "bits_per_byte": [1.2, 1.5]})
    layers = pd.DataFrame({"layer": [0, 1, 2], "variant": ["all"] * 3, "coupling": [0.41, 0.52, 0.47],
                           "ci_low": [0.4, 0.5, 0.45], "ci_high": [0.42, 0.55, 0.5], "n_passages": [3] * 3})
    ppl = store.write_run(make_run(), {"perplexity_domains": domains})
    cpl = store.write_run(make_run(instrument="coupling", settings={}), {"coupling": layers})
    import_sheet(store, reference_sheet("gpt2-april-2026"))
    store.write_verdict(VerdictRecord(prediction="P5d", version="abc123", form="general", claim=EVIL, source="seed",
                                      model="tiny", outcome="supported", effect=0.5, ci_low=0.1, ci_high=0.9, n=3,
                                      criterion={"statistic": "rho", "direction": ">", "threshold": 0},
                                      criterion_hash="h", run_ids=[cpl]))
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


def test_index_and_a_page_per_term(report):
    root, _, _ = report
    pages = sorted(p.stem for p in (root / "terms").glob("*.html"))
    assert len(pages) == 18 and "basin_connectivity" in pages
    index = text(root / "index.html")
    for tid in pages:
        assert f'href="terms/{tid}.html"' in index


def test_everything_is_escaped_and_self_contained(report):
    root, _, _ = report
    for page in [root / "index.html", *(root / "terms").glob("*.html")]:
        html = text(page)
        assert "<script" not in html and " src=" not in html and "<link" not in html
        assert not re.search(r'href="https?:', html)
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
    pages = [root / "index.html", *(root / "terms").glob("*.html")]
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
    assert "P5d" in coupling and f'href="../index.html#run-{cpl}"' in coupling
    assert "P5d" not in text(root / "terms" / "perplexity.html")


def test_term_pages_show_the_framework(report):
    root, _, _ = report
    terrain = text(root / "terms" / "slick_sticky.html")
    assert "Traction" in terrain and "name reconstructed" in terrain and "gives no formula" in terrain
    assert "Keskar et al. (2016)" in terrain and "hessian" in terrain
    density = text(root / "terms" / "density.html")
    assert "KL divergence measures model inadequacy to data" in density and "D_KL(P_data ‖ P_model)" in density
    assert "perplexity_domains.territory" in density  # the Technician field that reads it
    assert "no instrument yet" in text(root / "terms" / "memory.html")


def test_technician_fields_judged_and_awaiting(report):
    root, ppl, _ = report
    index = text(root / "index.html")
    section = index[index.index('id="technician"'):index.index('id="protocol"')]
    assert "awaiting Technician" in section
    assert "<b>elevated</b>" in section and "Ada &lt;Technician&gt;" in section
    assert "seed sheet April 2026" in section and "archaeological" in section  # the seed's calls, imported
    poetry = section[section.index(f"run-{ppl}"):]
    assert re.search(r"<td>poetry</td><td><b>elevated</b></td>", poetry)
    assert re.search(r"<td>spanish</td><td colspan=\"4\"><span class=\"awaiting\">awaiting Technician", poetry)


def test_protocol_log_by_session_in_order(report):
    root, _, _ = report
    index = text(root / "index.html")
    log = index[index.index('id="protocol"'):index.index('id="versions"')]
    assert log.index("s-one") < log.index("s-two")
    one = log[log.index("s-one"):log.index("s-two")]
    assert one.index("step 0") < one.index("step 1") < one.index("step 2")
    assert ">measured<" in one and ">reused<" in one and ">refused<" in one and "model unavailable" in log


def test_seed_record_beside_replications(report):
    root, _, _ = report
    index = text(root / "index.html")
    coupling = index[index.index('id="coupling"'):index.index('id="imported"')]
    assert "<svg" in coupling and "polyline" in coupling
    assert re.search(r"<td>0</td><td>0\.41</td>.*?<td>0\.61</td>", coupling, re.S)  # replicated beside seed
    assert "Anomalous dip" in coupling
    perplexity = index[index.index('id="perplexity"'):index.index('id="coupling"')]
    assert "seed 58.6" in perplexity  # poetry's seed tick
    imported = index[index.index('id="imported"'):index.index('id="vocabulary"')]
    assert "ONE UN-REPLICATED FIRST-PASS RUN" in imported and "102.5" in imported
