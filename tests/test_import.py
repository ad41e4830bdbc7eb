import json

import pytest
import yaml
from click.testing import CliRunner

from atlas import SheetError, Store
from atlas._import import import_sheet, load_sheet, reference_sheet
from atlas._report import seed_reference
from atlas.cli import main

SHEET = {
    "record": {"source": "lab notebook 7", "model": "gpt2", "judged_by": "R. Hooke", "date": "2026-05-01",
               "caveats": ["three passages per domain"]},
    "domain_perplexity": {"table": "perplexity_domains", "defaults": {"n": 3}, "note": "by hand",
                          "rows": [{"domain": "poetry", "ppl": 58.0, "territory": "elevated", "label": "Poetry"},
                                   {"domain": "spanish", "ppl": 80.5, "territory": "high",
                                    "territory_note": "corpus fingerprint"}]},
}


def write(tmp_path, data, name="sheet.yaml"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data))
    return path


def test_the_seed_record_round_trips():
    store = Store("sqlite://")
    result = import_sheet(store, reference_sheet("gpt2-april-2026"))
    assert not result.already and {r.instrument for r in result.runs} == {"perplexity", "coupling"}
    seed = seed_reference()
    for run in store.runs():
        assert (run.provenance, run.model, run.corpus) == ("imported", "gpt2", "imported:measurements-gpt2-april-2026")
        assert run.corpus_hash == result.hash and run.settings["record"]["caveats"] == seed["record"]["caveats"]
    [ppl] = store.runs(instrument="perplexity")
    domains = store.tables(ppl.id)["perplexity_domains"]
    assert dict(zip(domains["domain"], domains["ppl"])) == {r["domain"]: r["ppl"]
                                                           for r in seed["domain_perplexity"]["rows"]}
    assert domains["n_tokens"].isna().all() and domains["ci_low"].isna().all() and (domains["n"] == 5).all()
    [cpl] = store.runs(instrument="coupling")
    layers = store.tables(cpl.id)["coupling"]
    assert layers["coupling"].tolist() == [r["coupling"] for r in seed["coupling"]["rows"]]
    assert set(layers["variant"]) == {"seed_flattened"}


def test_territory_labels_become_judgments_never_columns():
    store = Store("sqlite://")
    import_sheet(store, reference_sheet("gpt2-april-2026"))
    [ppl] = store.runs(instrument="perplexity")
    assert "territory" not in store.tables(ppl.id)["perplexity_domains"].columns
    territory = {j.row_key: (j.value, j.note, j.by) for j in store.judgments(target_id=ppl.id, field="territory")}
    assert territory["academic_abstract"] == ("archaeological", "", "seed sheet April 2026")
    assert territory["spanish"] == ("high", "corpus fingerprint", "seed sheet April 2026")
    assert len(territory) == 8
    [cpl] = store.runs(instrument="coupling")
    notes = {j.row_key: j.value for j in store.judgments(target_id=cpl.id, field="interpretation")}
    assert notes["4"] == "Anomalous dip: below trend. Unexplained."


def test_importing_the_same_sheet_twice_is_a_no_op(tmp_path):
    db = f"sqlite:///{tmp_path / 'a.db'}"
    first = CliRunner().invoke(main, ["import-reference", "--db", db])
    assert first.exit_code == 0, first.output
    assert "8 rows" in first.output and "14 Technician judgment(s)" in first.output
    again = CliRunner().invoke(main, ["import", "--reference", "gpt2-april-2026", "--db", db])
    assert again.exit_code == 0 and "imported before" in again.output and "nothing written" in again.output
    assert len(Store(db).runs()) == 2 and len(Store(db).judgments()) == 14


def test_a_yaml_or_json_sheet_imports(tmp_path):
    store = Store("sqlite://")
    result = import_sheet(store, load_sheet(write(tmp_path, SHEET, "s.json")))
    [run] = result.runs
    assert run.corpus == "imported:lab notebook 7" and run.settings["labels"] == {"poetry": "Poetry"}
    assert {j.by for j in store.judgments()} == {"R. Hooke"}
    # the same content in YAML is the same sheet
    assert import_sheet(store, load_sheet(write(tmp_path, SHEET))).already


def test_a_malformed_sheet_is_refused_with_row_level_errors_and_nothing_is_stored(tmp_path):
    bad = json.loads(json.dumps(SHEET))
    bad["domain_perplexity"]["rows"] += [
        {"domain": "prose", "ppl": "high", "territory": "laminar"},
        {"domain": "legal", "ppl": 0.5},
        {"domain": "news", "ppl": 20.0, "colour": "red"},
        {"ppl": 30.0},
        {"domain": "forum", "ppl": 25.0, "territory": "swampy"},
    ]
    store = Store("sqlite://")
    with pytest.raises(SheetError) as caught:
        import_sheet(store, load_sheet(write(tmp_path, bad)))
    errors = caught.value.errors
    assert "domain_perplexity row 3, column 'ppl': expected a number, got 'high'" in errors
    assert "domain_perplexity row 4, column 'ppl': 0.5 is below the minimum 1" in errors
    assert any(e.startswith("domain_perplexity row 5, column 'colour': not a column") for e in errors)
    assert "domain_perplexity row 6, column 'domain': missing: the column is required" in errors
    assert any(e.startswith("domain_perplexity row 7, column 'territory': 'swampy' is not an allowed") for e in errors)
    assert len(errors) == 5
    assert store.runs() == [] and store.judgments() == []


def test_whole_table_checks_point_at_rows(tmp_path):
    bad = json.loads(json.dumps(SHEET))
    bad["domain_perplexity"]["rows"][1]["domain"] = "poetry"  # a duplicate key
    with pytest.raises(SheetError, match=r"domain_perplexity row 2, column domain: fails expect_column_values_to_be_unique"):
        import_sheet(Store("sqlite://"), load_sheet(write(tmp_path, bad)))


def test_a_sheet_without_a_record_or_sections_is_refused(tmp_path):
    with pytest.raises(SheetError) as caught:
        import_sheet(Store("sqlite://"), load_sheet(write(tmp_path, {"record": {"model": "gpt2"}, "nothing": {}})))
    assert "record, field 'source': missing or empty" in caught.value.errors
    assert "nothing: a section needs a non-empty `rows` list" in caught.value.errors


def test_csv_import_and_its_errors_by_line(tmp_path):
    good = tmp_path / "layers.csv"
    good.write_text("layer,coupling,interpretation\n0,0.61,\n1,0.70,rises\n")
    db = f"sqlite:///{tmp_path / 'a.db'}"
    result = CliRunner().invoke(main, ["import", str(good), "--model", "pythia-70m", "--source", "notebook",
                                       "--default", "variant=seed_flattened", "--default", "n_passages=1", "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["runs"][0]["tables"] == ["coupling"] and out["judgments"] == 1
    [run] = Store(db).runs()
    assert Store(db).tables(run.id)["coupling"]["coupling"].tolist() == [0.61, 0.70]

    bad = tmp_path / "bad.csv"
    bad.write_text("domain,n,ppl\npoetry,3,58.1\nspanish,three,80\nprose,2,0.3\n")
    result = CliRunner().invoke(main, ["import", str(bad), "--model", "gpt2", "--source", "x", "--db", db])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "line 3, column 'n': expected an integer, got 'three'" in result.output
    assert "line 4, column 'ppl': 0.3 is below the minimum 1" in result.output
    assert len(Store(db).runs()) == 1


def test_the_seed_reference_still_feeds_the_report():
    seed = seed_reference()
    assert len(seed["domain_perplexity"]["rows"]) == 8 and len(seed["coupling"]["rows"]) == 12
    assert seed["record"]["date"] == "April 2026"
