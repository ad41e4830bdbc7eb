import json

import pytest
from click.testing import CliRunner

from atlas import Store
from atlas.cli import main


def test_measure_perplexity_json(tmp_path):
    db = f"sqlite:///{tmp_path / 'a.db'}"
    result = CliRunner().invoke(main, ["measure", "perplexity", "--model", "tiny-opt", "--corpus", "starter",
                                       "--per-domain", "2", "--db", db, "--json", "--bos-policy", "none"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert len(out["rows"]) == 16 and len(out["domains"]) == 8 and out["bos_policy"] == "none"
    assert set(out["rows"][0]) == {"passage_id", "domain", "n_tokens", "n_bytes", "nll_sum", "ppl", "bits_per_byte"}
    assert set(out["domains"][0]) == {"domain", "n", "ppl", "ci_low", "ci_high", "bits_per_byte"}
    [run] = Store(db).runs()
    assert run.id == out["run_id"] and run.settings["bos_policy"] == "none"


def test_bad_corpus_is_one_clear_error_and_nothing_is_stored(tmp_path):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"id": "a", "domain": "x", "text": "fine"}\n{"id": "a", "domain": "x", "text": "dup"}\n')
    db = f"sqlite:///{tmp_path / 'a.db'}"
    result = CliRunner().invoke(main, ["measure", "perplexity", "--model", "tiny-gpt2", "--corpus", str(corpus),
                                       "--db", db])
    assert result.exit_code == 2
    assert "line 2: duplicate id 'a'" in result.output and "Traceback" not in result.output
    assert Store(db).runs() == []


def test_unavailable_model_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["measure", "perplexity", "--model", "gpt2", "--db", "sqlite://"])
    assert result.exit_code == 1 and "model 'gpt2'" in result.output and "hf download openai-community/gpt2" in result.output


def test_report_renders_from_the_store(tmp_path):
    db = f"sqlite:///{tmp_path / 'a.db'}"
    CliRunner().invoke(main, ["measure", "perplexity", "--model", "tiny-gpt2", "--per-domain", "1", "--db", db])
    result = CliRunner().invoke(main, ["report", "--db", db, "--out", str(tmp_path / "r")])
    assert result.exit_code == 0
    assert "tiny-gpt2" in (tmp_path / "r" / "index.html").read_text()


def test_verdicts_json_lists_the_latest_verdict_of_each_prediction_version(tmp_path):
    from atlas._store import VerdictRecord

    db = f"sqlite:///{tmp_path / 'a.db'}"
    store = Store(db)
    for outcome in ("refuted", "supported"):
        store.write_verdict(VerdictRecord(prediction="P", version="abc", form="general", claim="c", source="s",
                                          model="m", outcome=outcome, effect=1.5, ci_low=1.0, ci_high=float("nan"),
                                          n=3, criterion={"statistic": "x"}, criterion_hash="abc" * 4,
                                          evidence={"per_domain": {"poetry": 1.5}, "n_unit": "domains"}))
    result = CliRunner().invoke(main, ["verdicts", "--db", db, "--json"])
    [v] = json.loads(result.stdout)["verdicts"]
    assert v["outcome"] == "supported" and v["ci_high"] is None and v["n"] == 3
    assert set(v) == {"id", "prediction", "version", "form", "model", "corpus", "corpus_hash", "profile",
                      "code_version", "outcome", "effect", "ci_low", "ci_high", "n", "criterion", "criterion_hash",
                      "reason", "evidence", "created_at", "scope", "n_unit", "adjusted_outcome", "p_adjusted",
                      "holm_family"}
    assert v["evidence"]["per_domain"] == {"poetry": 1.5} and v["n_unit"] == "domains"  # the numbers behind it
    assert v["adjusted_outcome"] == "supported" and v["holm_family"] is None  # no adjustment stored for it


def test_help_imports_neither_torch_nor_transformers_nor_great_expectations():
    """Every --help answers from the instruments' source (atlas._catalog), never importing the heavy stack."""
    import subprocess
    import sys

    code = ("import sys; from atlas.cli import main\n"
            "for args in (['--help'], ['measure', '--help'], ['measure', 'hessian', '--help'], ['report', '--help']):\n"
            "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'great_expectations', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_the_catalog_read_from_source_agrees_with_the_registry():
    from atlas._catalog import catalog
    from atlas.instruments import INSTRUMENTS

    entries = catalog()
    assert list(entries) == list(INSTRUMENTS)
    for name, instrument in INSTRUMENTS.items():
        entry = entries[name]
        assert {s.name: s.default for s in entry.settings} == instrument.defaults
        assert {s.name: s.choices for s in entry.settings if s.choices} == instrument.choices
        assert {s.name for s in entry.settings if s.model} == set(instrument.models)
        assert entry.summary == instrument.summary and all(s.help for s in entry.settings), name


def test_a_setting_outside_its_set_is_a_usage_error_naming_the_choices():
    result = CliRunner().invoke(main, ["measure", "hessian", "--model", "tiny-gpt2", "--blocks", "heads",
                                       "--db", "sqlite://"])
    assert result.exit_code == 2 and "'heads' is not one of 'model', 'attention', 'mlp', 'layers'" in result.output


def test_an_unknown_model_name_suggests_close_registry_names(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["measure", "perplexity", "--model", "smollm-135m-instruct", "--db", "sqlite://"])
    assert result.exit_code == 2  # a usage error before any model loads
    assert "did you mean smollm2-135m-instruct?" in result.output and "(atlas models)" in result.output
    hub = CliRunner().invoke(main, ["measure", "perplexity", "--model", "someorg/smollm2-135m", "--db", "sqlite://"])
    assert hub.exit_code == 1 and "It is not a registry name. `atlas models` lists the registry." in hub.output


@pytest.mark.parametrize("args, words", [
    (["measure", "perplexty"], "no instrument 'perplexty': did you mean perplexity? (atlas measure --help lists them)"),
    (["verdict"], "no command 'verdict': did you mean verdicts or verify? (atlas --help lists them)"),
    (["verdicts", "--profile", "quik"], "'quik' is not one of 'quick', 'full'"),
])
def test_a_typo_in_a_command_instrument_or_filter_is_a_usage_error_naming_the_close_ones(args, words):
    result = CliRunner().invoke(main, args, prog_name="atlas")
    assert result.exit_code == 2 and words in " ".join(result.output.split()) and "Traceback" not in result.output


def test_an_instrument_is_named_with_a_hyphen_or_an_underscore(tmp_path):
    for name in ("hessian-coupling", "hessian_coupling"):
        result = CliRunner().invoke(main, ["measure", name, "--help"])
        assert result.exit_code == 0 and "--tokens-per-passage" in result.output


def test_models_says_which_are_here_and_how_to_get_the_others(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty hub cache, then gpt2 in it
    lines = CliRunner().invoke(main, ["models"]).output.splitlines()
    assert lines[0].split() == ["name", "source", "on", "this", "machine", "description"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert "here: random weights" in rows["tiny-gpt2"] and "here: the GGUF file" in rows["smollm2-135m-instruct"]
    assert "not here: hf download openai-community/gpt2" in rows["gpt2"]
    (tmp_path / "hub" / "models--openai-community--gpt2").mkdir(parents=True)
    assert "here: in the Hugging Face cache" in CliRunner().invoke(main, ["models"]).output


def test_train_help_lists_the_bundled_recipes():
    from atlas.lab import recipe_names

    text = " ".join(CliRunner().invoke(main, ["train", "--help"]).output.split())
    assert f"Recipes bundled: {', '.join(recipe_names())}" in text and "modular-addition" in text


def test_runs_lists_the_stored_runs_with_their_ids(tmp_path):
    db = f"sqlite:///{tmp_path / 'a.db'}"
    assert "no run in the store yet" in CliRunner().invoke(main, ["runs", "--db", db]).output
    measured = json.loads(CliRunner().invoke(main, ["measure", "perplexity", "--model", "tiny-gpt2", "--per-domain",
                                                    "1", "--db", db, "--json"]).output)
    listed = json.loads(CliRunner().invoke(main, ["runs", "--db", db, "--json"]).output)["runs"]
    assert [(r["run_id"], r["instrument"], r["model"], r["status"]) for r in listed] == [
        (measured["run_id"], "perplexity", "tiny-gpt2", "complete")]
    table = CliRunner().invoke(main, ["runs", "--db", db]).output.splitlines()
    assert table[0].startswith("run id") and table[1].startswith(measured["run_id"])
    assert CliRunner().invoke(main, ["runs", "--db", db, "--instrument", "lab"]).output.strip() == "no run matches"
