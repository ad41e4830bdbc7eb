import pandas as pd
import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from atlas import JudgmentError, SchemaViolation, Store, validate_table
from atlas._judgment import judge, run_fields, verdict_fields
from atlas._schema import schema_for
from atlas._store import Run, VerdictRecord, utcnow
from atlas.cli import main

DOMAINS = pd.DataFrame({"domain": ["poetry", "spanish"], "n": [3, 3], "n_tokens": [90, 80], "ppl": [40.0, 70.0],
                        "ci_low": [35.0, 60.0], "ci_high": [45.0, 80.0], "bits_per_byte": [1.2, 1.5]})
COUPLING = pd.DataFrame({"layer": [0, 0, 1, 1], "variant": ["row_centred", "row_centred_no_sink"] * 2, "coupling": [0.6, 0.5, 0.7, 0.4],
                         "ci_low": [0.5, 0.4, 0.6, 0.3], "ci_high": [0.7, 0.6, 0.8, 0.5], "n_passages": [3] * 4})


def make_run(**kw):
    fields = dict(instrument="perplexity", instrument_version="1", model="m", model_revision="r", corpus="c",
                  corpus_hash="h", settings={}, settings_hash="s", device="cpu", dtype="float32", seed=0,
                  started_at=utcnow(), ended_at=utcnow(), status="complete")
    return Run(**{**fields, **kw})


@pytest.fixture
def judged(store):
    ppl = store.write_run(make_run(id="aaaa1111" + "0" * 24), {"perplexity_domains": DOMAINS})
    cpl = store.write_run(make_run(id="bbbb2222" + "0" * 24, instrument="coupling"), {"coupling": COUPLING})
    store.write_verdict(VerdictRecord(prediction="P5", version="v", form="named", claim="c", source="s", model="m",
                                      outcome="supported", criterion={}, criterion_hash="x", run_ids=[cpl]))
    return store, ppl, cpl, store.verdicts()[0]


def test_the_schema_declares_technician_fields_and_automation_never_fills_them():
    assert schema_for("perplexity_domains").technician["territory"]["values"][0] == "laminar"
    assert "territory" not in schema_for("perplexity_domains").columns
    with pytest.raises(SchemaViolation, match="automation never fills"):
        validate_table("perplexity_domains", DOMAINS.assign(territory=["elevated", "high"]))


def test_a_judgment_is_stored_beside_the_measurement_never_in_it(judged):
    store, ppl, _, _ = judged
    before = store.tables(ppl)
    j = judge(store, "aaaa", "territory", "Moderate Gap", by="Ada", note="between the two", row="poetry")
    assert (j.target_kind, j.target_id, j.table_name, j.row_key, j.value) == ("run", ppl, "perplexity_domains",
                                                                             "poetry", "moderate gap")
    pd.testing.assert_frame_equal(store.tables(ppl)["perplexity_domains"], before["perplexity_domains"])
    assert "territory" not in store.tables(ppl)["perplexity_domains"].columns


def test_a_new_call_is_a_new_row_and_the_latest_counts(judged):
    store, ppl, _, _ = judged
    judge(store, ppl, "territory", "elevated", by="Ada", row="poetry")
    judge(store, ppl, "territory", "high", by="Grace", row="poetry")
    assert [j.value for j in store.judgments(target_id=ppl)] == ["elevated", "high"]
    [status] = run_fields(store, store.run(ppl))
    rows = {key: (j.value if j else None, n) for key, j, n in status.rows}
    assert rows == {"poetry": ("high", 2), "spanish": (None, 0)}
    assert (status.judged, status.awaiting) == (1, 1)


def test_judgments_are_append_only(judged):
    store, ppl, _, _ = judged
    judge(store, ppl, "territory", "elevated", by="Ada", row="poetry")
    for statement in ("UPDATE judgment SET value='laminar'", "DELETE FROM judgment"):
        with pytest.raises(IntegrityError, match="append-only"), store.engine.begin() as conn:
            conn.execute(text(statement))


def test_per_layer_interpretation_and_verdict_interpretation(judged):
    store, _, cpl, verdict = judged
    judge(store, "bbbb2222", "interpretation", "dip tracks the sink", by="Ada", row="1")
    judge(store, str(verdict.id), "interpretation", "architectural, not scale", by="Ada")
    [layer_field] = run_fields(store, store.run(cpl))
    assert [k for k, _, _ in layer_field.rows] == ["0", "1"]  # one row per layer, not per (layer, variant)
    assert layer_field.rows[1][1].value == "dip tracks the sink"
    [field] = verdict_fields(store, verdict)
    assert field.rows[0][1].value == "architectural, not scale"


@pytest.mark.parametrize("args, message", [
    (("aaaa", "mood", "fine"), "not a Technician field"),
    (("aaaa", "territory", "swampy", "poetry"), "not an allowed value"),
    (("aaaa", "territory", "high"), "give --row"),
    (("aaaa", "territory", "high", "opera"), "has no domain 'opera'"),
    (("zzzz", "territory", "high", "poetry"), "no run or verdict"),
    (("aa", "territory", "high", "poetry"), "no run or verdict"),
    (("1", "territory", "high"), "not a Technician field of verdicts"),
    (("bbbb", "interpretation", " ", "0"), "needs a value"),
])
def test_a_bad_judgment_is_one_clear_error_and_nothing_is_written(judged, args, message):
    store = judged[0]
    target, field, value, *row = args
    with pytest.raises(JudgmentError, match=message):
        judge(store, target, field, value, by="Ada", row=row[0] if row else None)
    assert store.judgments() == []


def test_cli_judge(tmp_path):
    db = f"sqlite:///{tmp_path / 'a.db'}"
    store = Store(db)
    ppl = store.write_run(make_run(), {"perplexity_domains": DOMAINS})
    ok = CliRunner().invoke(main, ["judge", ppl[:8], "territory", "laminar", "--row", "spanish", "--by", "Ada",
                                   "--note", "surprisingly", "--db", db])
    assert ok.exit_code == 0, ok.output
    assert "perplexity_domains[spanish].territory = 'laminar' by Ada" in ok.output
    bad = CliRunner().invoke(main, ["judge", ppl[:8], "territory", "soggy", "--row", "spanish", "--by", "Ada",
                                    "--db", db])
    assert bad.exit_code == 2 and "not an allowed value" in bad.output and "Traceback" not in bad.output
    assert [j.value for j in Store(db).judgments()] == ["laminar"]
