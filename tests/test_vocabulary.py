import json
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from atlas import INSTRUMENTS, VocabularyError
from atlas._vocabulary import load_vocabulary, registry_mismatches, vocabulary
from atlas.cli import main

IDS = {"steep_shallow", "hot_cold", "smooth_abrasive", "slick_sticky", "loose_tight", "flexible_stiff", "elevation",
       "density", "perplexity", "probability", "coupling", "viscosity", "elasticity", "memory",
       "basin_connectivity", "symmetry_orbits", "phase_transitions", "algorithmic_branches"}


def test_eighteen_terms_in_three_groups():
    terms = vocabulary()
    assert set(terms) == IDS
    groups = [t.group for t in terms.values()]
    assert (groups.count("terrain"), groups.count("navigator"), groups.count("global_geometry")) == (7, 7, 4)
    for t in terms.values():
        assert t.version == ("v12" if t.group == "navigator" else "v13")
        assert t.definition and t.citations and len(t.poles) == (1 if t.id == "elevation" else 2)


def test_terrain_names_are_marked_reconstructed_and_have_no_formula():
    for t in vocabulary().values():
        assert t.name_reconstructed == (t.group == "terrain")
        assert (t.formula is None) == (t.group == "terrain")
    assert vocabulary()["steep_shallow"].name == "Gradient magnitude"


def test_flags_from_the_text():
    terms = vocabulary()
    assert any("KL divergence measures model inadequacy to data" in f for f in terms["density"].flags)
    assert any("not an independent variable" in f for f in terms["viscosity"].flags)
    skywork = [t.id for t in terms.values() if any("Skywork" in f for f in t.flags)]
    assert set(skywork) == {t.id for t in terms.values() if t.group == "navigator"}


def test_vocabulary_and_registry_agree_both_ways():
    """Fails if a term names an instrument that is not registered, or an instrument names an unknown term
    (or either side omits the other)."""
    assert registry_mismatches(INSTRUMENTS) == []


def test_registry_check_can_fail():
    fake = {name: SimpleNamespace(name=name, terms=inst.terms) for name, inst in INSTRUMENTS.items()}
    fake["perplexity"] = SimpleNamespace(name="perplexity", terms=("perplexity", "elevation", "weather"))
    fake.pop("coupling", None)
    problems = registry_mismatches(fake)
    assert any("unknown term 'weather'" in p for p in problems)
    assert any("names instrument 'coupling', which is not in the registry" in p for p in problems)


GOOD = """
terms:
  - {id: x, name: X, group: navigator, poles: [a, b], definition: d, formula: null, citations: [c], flags: [],
     version: v12, source: s, instruments: no instrument yet}
"""


@pytest.mark.parametrize("change, field", [
    ("group: navigator", "group"), ("poles: [a, b]", "poles"), ("definition: d", "definition"),
    ("instruments: no instrument yet", "instruments"), ("citations: [c]", "citations"), ("version: v12", "version")])
def test_a_malformed_term_is_one_clear_error_naming_term_and_field(change, field):
    load_vocabulary(GOOD)  # the unchanged file is fine
    broken = {"group: navigator": "group: weather", "poles: [a, b]": "poles: [a, b, c]",
              "definition: d": "definition: ''", "instruments: no instrument yet": "instruments: someday",
              "citations: [c]": "citations: []", "version: v12": "version: v99"}[change]
    with pytest.raises(VocabularyError, match=rf"term 'x'.*'{field}'"):
        load_vocabulary(GOOD.replace(change, broken))


def test_cli_vocabulary_json():
    result = CliRunner().invoke(main, ["vocabulary", "--json"])
    assert result.exit_code == 0, result.output
    terms = json.loads(result.stdout)["terms"]
    assert len(terms) == 18
    for t in terms:
        assert {"id", "group", "poles", "definition", "formula", "citations", "flags", "version",
                "instruments"} <= set(t)
    by_id = {t["id"]: t for t in terms}
    assert by_id["coupling"]["instruments"] == ["coupling", "ablation", "hessian", "hessian_coupling"]
    assert by_id["memory"]["instruments"] == ["memory"] and by_id["density"]["instruments"] == "technician"
    text = CliRunner().invoke(main, ["vocabulary"]).output
    assert "Gradient magnitude (name reconstructed)" in text
