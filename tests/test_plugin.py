"""End to end through pytest itself: prediction modules run by pytester, checked in the store and the report."""

import pytest

from atlas import STARTER_CORPUS, Store
from atlas._costs import calibrated
from atlas.instruments import INSTRUMENTS

MODULE = '''
import pytest
from atlas import Criterion
from atlas.stats import domain_bootstrap_ci

def spread(prediction, interval=True):
    tables = prediction.evidence["perplexity"]
    domains = tables["perplexity_domains"].set_index("domain")
    high, low = domains["ppl"].idxmax(), domains["ppl"].idxmin()
    lo, hi = domain_bootstrap_ci(tables["perplexity"], lambda p: p[high] / p[low], domains=[high, low],
                                 n_resamples=200) if interval else (float("nan"), float("nan"))
    prediction.conclude(effect=domains.loc[high, "ppl"] / domains.loc[low, "ppl"], ci=(lo, hi),
                        n=int(domains["n"].sum()), evidence={"high": high, "low": low})

@pytest.mark.prediction(id="T-supported", claim="spread above 0.5 <b>bold</b>",
                        needs=("perplexity",),
                        criterion=Criterion("highest / lowest domain perplexity", ">", 0.5))
def test_supported(prediction):
    spread(prediction)

@pytest.mark.prediction(id="T-refuted", claim="spread above 5",
                        needs=("perplexity",),
                        criterion=Criterion("highest / lowest domain perplexity", ">", 5.0))
def test_refuted(prediction):
    spread(prediction)

@pytest.mark.prediction(id="T-inconclusive", claim="an analysis that yields no interval is never judged",
                        needs=("perplexity",),
                        criterion=Criterion("highest / lowest domain perplexity", ">", 0.5))
def test_inconclusive(prediction):
    spread(prediction, interval=False)

@pytest.mark.prediction(id="T-not-run", claim="needs real GPT-2", model="gpt2", form="named",
                        needs=("perplexity",),
                        criterion=Criterion("highest / lowest domain perplexity", ">", 0.5))
def test_not_run(prediction):
    spread(prediction)
'''


@pytest.fixture
def project(pytester, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pytester.makepyfile(test_predictions=MODULE)
    corpus = pytester.path / "corpus.jsonl"
    corpus.write_text("".join(line for i, line in enumerate(STARTER_CORPUS.read_text().splitlines(True))
                              if i % 12 < 3), encoding="utf-8")
    db = f"sqlite:///{pytester.path / 'atlas.db'}"
    args = ["--atlas-model=tiny-gpt2", f"--atlas-corpus={corpus}", f"--atlas-db={db}", "-p", "no:cacheprovider"]
    return pytester, db, args


def assert_outcomes(result):
    outcomes = result.parseoutcomes()
    assert {k: outcomes.get(k) for k in ("passed", "failed", "refuted", "skipped", "inconclusive")} == {
        "passed": 1, "failed": None, "refuted": 1, "skipped": 1, "inconclusive": 1}, result.stdout.str()


def check_store_and_report(pytester, db):
    verdicts = {v.prediction: v for v in Store(db).latest_verdicts()}
    assert {k: v.outcome for k, v in verdicts.items()} == {
        "T-supported": "supported", "T-refuted": "refuted", "T-inconclusive": "inconclusive",
        "T-not-run": "not_run"}
    supported = verdicts["T-supported"]
    assert supported.n == 24 and supported.ci_low <= supported.effect <= supported.ci_high
    assert supported.model == "tiny-gpt2" and supported.run_ids and supported.criterion["threshold"] == 0.5
    assert len(supported.criterion_hash) == 64 and len(supported.version) == 12
    assert supported.version != verdicts["T-refuted"].version  # same analysis, another criterion
    assert supported.corpus == "corpus" and supported.profile == "quick" and supported.code_version
    assert "gpt2" in verdicts["T-not-run"].reason and verdicts["T-not-run"].effect is None
    html = (pytester.path / "reports" / "index.html").read_text()
    for pid in verdicts:
        assert pid in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html  # autoescaped
    assert "<svg" in html and "random-init seed=0" in html and html.count("<script") == 1  # the report's own
    row = html[html.index(f'id="verdict-{verdicts["T-inconclusive"].id}"'):]
    assert "no estimate" in row[:row.index("</tr>")]  # its interval is [nan, nan]: not a straddle
    from atlas._report import prediction_page

    page = (pytester.path / "reports" / "predictions" / prediction_page("T-supported")).read_text()
    evidence = page[page.index('<section id="evidence">'):page.index('<section id="all">')]
    assert "<caption>values</caption>" in evidence and "<td>high</td>" in evidence and supported.evidence["high"] in evidence
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # self-contained


def test_outcomes_verdicts_and_report(project):
    pytester, db, args = project
    result = pytester.runpytest(*args, "-rs")
    assert_outcomes(result)
    for line in ["*REFUTED T-refuted on tiny-gpt2*", "*not run: model 'gpt2'*", "*verdict report:*index.html*"]:
        result.stdout.fnmatch_lines([line])
    check_store_and_report(pytester, db)
    check_results_table(result.stdout.lines)


def check_results_table(lines):
    """The results table at the end of the run: a header and one row per verdict, with its numbers."""
    start = next(i for i, line in enumerate(lines) if "Atlas results" in line) + 1
    header, *rows = lines[start:start + 5]
    assert header.split() == ["prediction", "model", "outcome", "effect", "95%", "CI", "criterion", "n", "reason"]
    rows = {row.split()[0]: row for row in rows}
    assert set(rows) == {"T-supported", "T-refuted", "T-inconclusive", "T-not-run"}
    assert " supported " in rows["T-supported"] and " > 0.5 " in rows["T-supported"] and "24 passages" in rows[
        "T-supported"]
    assert "inconclusive: no estimate" in rows["T-inconclusive"]  # its interval is [nan, nan]
    assert " refuted " in rows["T-refuted"] and "the CI lies on the wrong side of 5" in rows["T-refuted"]
    assert "not run" in rows["T-not-run"] and "model 'gpt2'" in rows["T-not-run"]


def test_under_xdist_workers_write_verdicts_and_only_the_controller_renders(project):
    pytester, db, args = project
    result = pytester.runpytest_subprocess(*args, "-n", "2")
    assert_outcomes(result)
    assert result.stdout.str().count("verdict report:") == 1
    check_store_and_report(pytester, db)
    check_results_table(result.stdout.lines)  # the workers' verdicts, read by the controller


def test_under_xdist_a_store_that_cannot_be_opened_is_one_usage_error_of_the_controller(project):
    """The controller opens the store before the workers start: a worker's exit would be an xdist crash."""
    pytester, _, args = project
    (pytester.path / "not-a-store.db").write_text("a shopping list, not a database\n" * 100)
    result = pytester.runpytest_subprocess(*args, f"--atlas-db=sqlite:///{pytester.path / 'not-a-store.db'}", "-n", "2")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "--atlas-db: cannot open the store" in output, output
    assert "INTERNALERROR" not in output and "file is not a database" in output


def test_an_xdist_run_without_predictions_creates_no_store(pytester):
    pytester.makepyfile("def test_plain(): pass")
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2").assert_outcomes(passed=1)
    assert not (pytester.path / "atlas.db").exists()  # the default store: the controller does not create it


def test_a_run_without_predictions_writes_no_report(pytester):
    pytester.makepyfile("def test_plain(): pass")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert not (pytester.path / "reports").exists() and not (pytester.path / "atlas.db").exists()


def test_node_ids_carry_the_prediction_id_and_markers_select_by_form_and_lab(pytester):
    """-m selects by form (named, general) and by Lab training (lab); each node id names its prediction."""
    from pathlib import Path

    predictions = Path(__file__).resolve().parents[1] / "predictions"
    run = pytester.runpytest_subprocess(str(predictions), "--collect-only", "-q", "-m", "not lab",
                                        "-p", "no:cacheprovider")
    quick = [line for line in run.outlines if "::" in line]
    assert quick and all(line.endswith("]") for line in quick)
    assert any(line.endswith("[P0b-domain-perplexity-spread]") for line in quick)
    assert not any("[P8-" in line or "[P12-" in line for line in quick)  # Lab-trained: left out
    lab = pytester.runpytest_subprocess(str(predictions), "--collect-only", "-q", "-m", "lab and named",
                                        "-p", "no:cacheprovider")
    assert {line.split("[")[1].split("-")[0] for line in lab.outlines if "::" in line} >= {"P8", "P9b", "P10", "P12"}


#: an instrument the cost model cannot rate (one of those never timed on two model sizes)
UNCALIBRATED = next(name for name in INSTRUMENTS if name not in calibrated())

COSTS = f'''
import pytest
from atlas import Criterion

C = Criterion("x", ">", 0)

@pytest.mark.prediction(id="Q-cheap", claim="c", needs=("perplexity",), criterion=C)
def test_cheap(prediction): pass

@pytest.mark.prediction(id="Q-big-model", claim="c", needs=("perplexity",), criterion=C, form="named",
                        model="mistral-7b")
def test_big(prediction): pass

@pytest.mark.prediction(id="Q-uncalibrated", claim="c", needs=("{UNCALIBRATED}",), criterion=C)
def test_uncalibrated(prediction): pass

@pytest.mark.prediction(id="Q-lab", claim="c", needs=("perplexity",), criterion=C, form="named",
                        model="lab:tiny-modular@0")
def test_lab(prediction): pass
'''


def test_slow_marks_what_the_cost_model_expects_to_take_long_or_to_train(pytester):
    """-m "not slow": a prediction on a tiny model stays; one the cost model expects to take hours (perplexity on
    Mistral-7B), one it cannot rate (an uncalibrated instrument) and one that trains (a Lab run) are left out. The
    rating loads no model: collecting stays quick."""
    import time

    from atlas._plan import SLOW_SECONDS

    pytester.makepyfile(test_costs=COSTS)
    args = ["--collect-only", "-q", "-p", "no:cacheprovider", "--atlas-model=tiny-gpt2"]
    started = time.monotonic()
    quick = pytester.runpytest_inprocess(*args, "-m", "not slow")
    assert time.monotonic() - started < 20
    assert [line.split("[")[1] for line in quick.outlines if "::" in line] == ["Q-cheap]"]
    slow = pytester.runpytest_inprocess(*args, "-m", "slow and not lab")
    assert {line.split("[")[1] for line in slow.outlines if "::" in line} == {"Q-big-model]", "Q-uncalibrated]"}
    markers = pytester.runpytest_inprocess("--markers", "-p", "no:cacheprovider")
    assert any(line.startswith("@pytest.mark.slow:") and f"{SLOW_SECONDS:.0f} s" in line for line in markers.outlines)


def test_last_failed_runs_the_refuted_and_the_inconclusive_again(project):
    """--lf: an inconclusive verdict is not settled, so it is run again with the refuted one."""
    pytester, db, args = project
    args = [a for a in args if a not in ("-p", "no:cacheprovider")]
    pytester.runpytest(*args)
    again = pytester.runpytest(*args, "--lf").parseoutcomes()
    assert {k: again.get(k) for k in ("passed", "refuted", "inconclusive", "skipped")} == {
        "passed": None, "refuted": 1, "inconclusive": 1, "skipped": None}
