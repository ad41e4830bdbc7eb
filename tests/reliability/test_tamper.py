"""Forgeries: a store that was written behind Atlas's back says so, and CISP never reuses what it cannot trust.

Each forgery of the hostile probe (issue 21) is made here with plain SQL, as an intruder holding the database
file would: 40 rows INSERTed under a stored perplexity run, a forged later run with the same key, an UPDATE of
a verdict behind a dropped trigger, a dropped ``judgment`` table. ``atlas verify`` names every broken record
(exit 1) and a clean store verifies (exit 0); opening a store never repairs it (only ``atlas verify --repair``,
logged); a forged run is measured afresh, and the protocol log says why. A read-only store (``?mode=ro``) is
read, verified, reported and exported, and refuses writes in one line.
"""

from __future__ import annotations

import json
import os

from pathlib import Path

import pytest
from _support import record
from click.testing import CliRunner
from sqlalchemy import create_engine, event, text

from atlas import Store, StoreFull, StoreTampered, load_corpus, load_model, run_instrument
from atlas._store import Judgment, VerdictRecord
from atlas.cli import main

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny-gpt2", device="cpu")


@pytest.fixture
def corpus(tiny_corpus):
    return load_corpus(tiny_corpus)


def atlas(*args: str):
    """``atlas ARGS`` in this process: (exit status, output)."""
    result = CliRunner().invoke(main, [*map(str, args)])
    return result.exit_code, result.output


def forge(url: str, *statements: str) -> None:
    """Run SQL on the store as an intruder would: straight on the database, no Atlas in between."""
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()


def measure(url: str, lm, corpus):
    store = Store(url)
    result = run_instrument(store, lm, corpus, "perplexity", progress=False, bootstrap_resamples=100,
                            session="tamper")
    store.engine.dispose()
    return result


def verdict_on(url: str, run_id: str) -> None:
    store = Store(url)
    store.write_verdict(VerdictRecord(prediction="P0b", version="v1", form="named", claim="c", source="s",
                                      model="tiny-gpt2", outcome="refuted", effect=1.016, ci_low=1.01,
                                      ci_high=1.024, n=16, criterion={"threshold": 1.5}, criterion_hash="h",
                                      run_ids=[run_id]))
    store.write_judgment(Judgment(target_kind="run", target_id=run_id, field="territory", value="core", by="me"))
    store.engine.dispose()


def verified(url: str, *broken: str) -> str:
    """``atlas verify``: exit 0 when nothing is ``broken``, else exit 1 with a line naming each of them."""
    code, out = atlas("verify", "--db", url)
    assert code == (1 if broken else 0), out
    for what in broken:
        assert any(what in line for line in out.splitlines()), (what, out)
    if broken:
        record("forgeries detected by atlas verify", 1)
    return out


def reason_measured(url: str, run_id: str) -> str:
    [step] = [e for e in Store(url).events() if e.run_id == run_id and e.action == "measured"]
    return step.reason


def test_a_clean_store_verifies(tmp_path, lm, corpus):
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    run = measure(url, lm, corpus).run
    verdict_on(url, run.id)
    assert measure(url, lm, corpus).reused  # a derivation is appended, the store still verifies
    assert "all verified" in verified(url)
    code, out = atlas("verify", "--db", url, "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["problems"] == [] and report["gaps"] == {}
    assert report["records"]["run"] == 1 and report["records"]["verdictrecord"] == 1
    assert all(head.startswith("sha256:") for table, head in report["heads"].items() if report["records"][table])


def test_rows_inserted_under_a_run_are_named_and_never_reused(store_url, lm, corpus):
    """The probe's P0b flip: 40 passages that are not in the corpus, INSERTed under the stored run."""
    run = measure(store_url, lm, corpus).run
    values = json.dumps({"passage_id": "forged", "domain": "domain_0", "n_tokens": 10, "n_bytes": 40,
                         "nll_sum": 100.0, "ppl": 9999.0, "bits_per_byte": 3.6})
    forge(store_url, *[f"INSERT INTO measurement (run_id, table_name, row, \"values\", derivation) "
                       f"VALUES ('{run.id}', 'perplexity', {100 + i}, '{values}', '')" for i in range(40)])
    verified(store_url, f"run {run.id}: its content does not match its hash")
    again = measure(store_url, lm, corpus)
    assert not again.reused and again.run.id != run.id and "forged" not in set(again.tables["perplexity"].passage_id)
    assert f"stored run {run.id} not reused, it does not verify" in reason_measured(store_url, again.run.id)
    record("forged runs measured afresh, never reused", 1)
    verified(store_url, f"run {run.id}")  # still named; the new run verifies
    code, out = atlas("verify", "--db", store_url)
    assert again.run.id not in out


def test_the_report_shows_the_store_verification_state(tmp_path, lm, corpus):
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    run = measure(url, lm, corpus).run
    assert atlas("report", "--db", url, "--out", tmp_path / "clean")[0] == 0
    assert "Store verified" in (tmp_path / "clean" / "index.html").read_text(encoding="utf-8")
    forge(url, f"INSERT INTO measurement (run_id, table_name, row, \"values\", derivation) "
               f"VALUES ('{run.id}', 'perplexity', 99, '{{}}', '')")
    assert atlas("report", "--db", url, "--out", tmp_path / "forged")[0] == 0
    page = (tmp_path / "forged" / "index.html").read_text(encoding="utf-8")
    assert "Store NOT verified" in page and f"run {run.id}: its content does not match its hash" in page


def test_a_forged_later_run_with_the_same_key_is_named_and_never_reused(tmp_path, lm, corpus):
    """A copy of the stored run, seal and all, with a later start and every perplexity ten times higher."""
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    run = measure(url, lm, corpus).run
    store = Store(url)
    with store.engine.connect() as conn:
        columns = [c for c in conn.execute(text("SELECT * FROM run")).keys() if c not in ("id", "started_at")]
    store.engine.dispose()
    listed = ", ".join(columns)
    forge(url, f"INSERT INTO run (id, started_at, {listed}) SELECT 'forged', '2999-01-01 00:00:00.000000', "
               f"{listed} FROM run WHERE id = '{run.id}'",
          "INSERT INTO measurement (run_id, table_name, row, \"values\", derivation) "
          "SELECT 'forged', table_name, row, json_set(\"values\", '$.ppl', json_extract(\"values\", '$.ppl') * 10), "
          f"derivation FROM measurement WHERE run_id = '{run.id}' AND derivation = ''")
    assert Store(url).runs(settings_hash=run.settings_hash)[-1].id == "forged"  # what reuse used to take
    verified(url, "run forged: its content does not match its hash")
    again = measure(url, lm, corpus)
    assert not again.reused and again.run.id not in ("forged", run.id)
    assert "stored run forged not reused, it does not verify" in reason_measured(url, again.run.id)
    record("forged runs measured afresh, never reused", 1)


def test_an_update_behind_a_dropped_trigger_is_named_and_the_trigger_not_silently_restored(store_url, lm, corpus):
    run = measure(store_url, lm, corpus).run
    verdict_on(store_url, run.id)
    sqlite = store_url.startswith("sqlite")
    trigger = "verdictrecord_no_update" if sqlite else "verdictrecord_append_only"
    forge(store_url, f"DROP TRIGGER {trigger}" + ("" if sqlite else " ON verdictrecord"),
          "UPDATE verdictrecord SET outcome = 'supported', effect = 9.3, ci_low = 5.21, ci_high = 13.41")
    store = Store(store_url)  # opening it repairs nothing ...
    assert store.gaps == {f"trigger {trigger}": "missing"}
    with pytest.raises(StoreTampered, match="not guarded"):  # ... and nothing is written to it
        store.write_judgment(Judgment(target_kind="run", target_id=run.id, field="f", value="v", by="me"))
    store.engine.dispose()
    verified(store_url, f"trigger {trigger} is missing", "verdict 1: its content does not match its hash")
    code, out = atlas("verify", "--db", store_url, "--repair")
    assert code == 1 and f"repaired: re-created trigger {trigger} (missing)" in out and "verdict 1" in out
    [repair] = [e for e in Store(store_url).events() if e.action == "repaired"]
    assert trigger in repair.reason
    verified(store_url, "verdict 1: its content does not match its hash")


def test_a_dropped_table_refuses_the_store_until_repaired(tmp_path, lm, corpus):
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    run = measure(url, lm, corpus).run
    verdict_on(url, run.id)
    forge(url, "DROP TABLE judgment")
    with pytest.raises(StoreTampered, match="lacks its table"):
        Store(url)
    code, out = atlas("report", "--db", url, "--out", tmp_path / "report")
    assert code == 1 and len(out.strip().splitlines()) == 1 and "atlas verify --db URL --repair" in out
    verified(url, "table judgment is missing: its records are lost")
    code, out = atlas("verify", "--db", url, "--repair")
    assert code == 0 and "repaired: re-created table judgment (missing, empty)" in out, out
    store = Store(url)
    assert store.judgments() == [] and [e.reason for e in store.events() if e.action == "repaired"] == [
        "re-created table judgment (missing, empty)"]  # the loss is on record, in the chained protocol log
    verified(url)


def test_a_read_only_store_is_read_verified_reported_and_exported(tmp_path, lm, corpus, tiny_corpus):
    path = tmp_path / "atlas.db"
    run = measure(f"sqlite:///{path}", lm, corpus).run
    verdict_on(f"sqlite:///{path}", run.id)
    url = f"sqlite:///{path}?mode=ro"
    before = path.read_bytes()
    verified(url)
    code, out = atlas("report", "--db", url, "--out", tmp_path / "report")
    assert code == 0 and "opened read-only" in (tmp_path / "report" / "index.html").read_text(encoding="utf-8"), out
    code, out = atlas("export", run.id, "--db", url, "--out", tmp_path / "export")
    assert code == 0 and (tmp_path / "export" / run.id / "provenance.json").is_file(), out
    code, out = atlas("measure", "perplexity", "--model", "tiny-gpt2", "--corpus", tiny_corpus, "--db", url,
                      "--no-reuse")
    assert code == 1 and out.strip().splitlines() == [out.strip()] and "open read-only" in out, out
    assert "perplexity tiny-gpt2" not in out  # refused before measuring
    assert path.read_bytes() == before


def test_a_file_this_user_may_not_write_is_opened_read_only(tmp_path, lm, corpus, monkeypatch):
    path = tmp_path / "atlas.db"
    measure(f"sqlite:///{path}", lm, corpus)
    path.chmod(0o444)
    if os.geteuid() == 0:  # root may write any file: the check is shown the answer any other user gets
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode == os.W_OK and Path(p) == path
                            else real(p, mode, **kw))
    store = Store(f"sqlite:///{path}")
    assert store.read_only and len(store.runs()) == 1 and store.verify().ok


MODULE = '''
import pytest
from atlas import Criterion

@pytest.mark.prediction(id="T-ppl", claim="perplexity stays below 1000", needs=("perplexity",),
                        criterion=Criterion("mean ppl", "<", 1000.0))
def test_ppl(prediction):
    ppl = prediction.evidence["perplexity"]["perplexity"]["ppl"]
    prediction.conclude(effect=float(ppl.mean()), ci=(float(ppl.min()), float(ppl.max())), n=len(ppl))
'''


def test_a_session_measures_afresh_rather_than_reuse_a_forged_run(prediction_project):
    """P0b, as the probe found it: rows INSERTed under the run a verdict used must not flip the next verdict."""
    pytester, db, args = prediction_project(MODULE, 1)
    pytester.runpytest(*args).assert_outcomes(passed=1)
    [run] = Store(db).runs()
    values = json.dumps({"passage_id": "forged", "domain": "forged", "n_tokens": 10, "n_bytes": 40,
                         "nll_sum": 100.0, "ppl": 1e6, "bits_per_byte": 3.6})
    forge(db, *[f"INSERT INTO measurement (run_id, table_name, row, \"values\", derivation) "
                f"VALUES ('{run.id}', 'perplexity', {100 + i}, '{values}', '')" for i in range(40)])
    pytester.runpytest(*args).assert_outcomes(passed=1)  # it would fail (refuted) on the forged rows
    first, second = Store(db).verdicts()
    assert second.outcome == first.outcome == "supported" and second.effect == first.effect
    assert second.run_ids != first.run_ids
    assert f"stored run {run.id} not reused" in reason_measured(db, second.run_ids[0])
    record("forged runs measured afresh, never reused", 1)


def test_a_store_with_no_room_refuses_the_write_whole(tmp_path, lm, corpus):
    """A full disk at the store write (here SQLite's own size limit, ``max_page_count``, which fails a write as
    a full disk does: SQLITE_FULL) is one line naming the fix, and the transaction rolls back whole: the store
    holds what it held and still verifies."""
    path = tmp_path / "atlas.db"
    url = f"sqlite:///{path}"
    measure(url, lm, corpus)
    store = Store(url)
    with store.engine.connect() as conn:
        pages = conn.execute(text("PRAGMA page_count")).scalar()
    event.listen(store.engine, "connect", lambda dbapi, _: dbapi.execute(f"PRAGMA max_page_count = {pages}"))
    store.engine.dispose()
    with pytest.raises(StoreFull, match="no room for the write .* free space on its disk") as raised:
        run_instrument(store, lm, corpus, "perplexity", progress=False, bootstrap_resamples=100, session="full",
                       reuse=False)
    assert "\n" not in str(raised.value)
    after = Store(url)
    assert len(after.runs()) == 1 and after.verify().ok
    record("bad inputs tried (one clear error, nothing stored)", 1)
