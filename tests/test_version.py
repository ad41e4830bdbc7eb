"""A prediction's version is the content of its analysis (``atlas._version``): what the test function reaches,
wherever it is defined. Moving a helper unchanged, or re-exporting it from a public facade, keeps the version;
changing it, renaming it, or changing a constant it reads makes a new one; formatting never counts."""

import importlib
import inspect
import itertools
import sys
import textwrap

import numpy as np
import pytest

import atlas
from atlas import _evidence, _predict, _stats, _verdict, _version
from atlas._predict import version_of

CRITERION = atlas.Criterion("spread", ">", 1.0)

BODY = '''
import pytest

@pytest.mark.prediction(id="T-spread", claim="the spread exceeds 1")
def test_it(prediction):
    effect = spread([1.0, 4.0, 2.0])  # the analysis
    prediction.conclude(effect=effect, ci=(effect - 1, effect + 1), n=3)
'''

SPREAD = '''
SCALE = 2.0

def spread(values):
    return (max(values) - min(values)) * SCALE
'''

SPREAD_REFORMATTED = '''
"""Helpers, reformatted."""

SCALE = 2.0


def spread(
    values,
):
    """The range of the values, scaled."""
    # largest minus smallest
    return (max(values)
            - min(values)) * SCALE
'''


@pytest.fixture
def version(tmp_path, monkeypatch):
    """The version of ``test_it`` in a fresh project of the given modules (name -> source; the prediction
    module is ``prediction_module``), each project in its own folder, imported afresh."""
    projects = itertools.count()

    def of(**modules: str) -> str:
        folder = tmp_path / f"project{next(projects)}"
        folder.mkdir()
        for name, source in modules.items():
            (folder / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        monkeypatch.syspath_prepend(folder)
        try:
            for name in modules:
                sys.modules.pop(name, None)
            return version_of(importlib.import_module("prediction_module").test_it, CRITERION, ())
        finally:
            for name in modules:
                sys.modules.pop(name, None)

    return of


def test_moving_a_helper_unchanged_keeps_the_version(version):
    in_a = version(prediction_module="from helpers_a import spread\n" + BODY, helpers_a=SPREAD)
    assert version(prediction_module="from helpers_b import spread\n" + BODY, helpers_b=SPREAD) == in_a
    assert version(prediction_module=SPREAD + BODY) == in_a  # into the prediction's own module
    # the constant moved on its own, the helper importing it from where it now lives
    assert version(prediction_module="from helpers_b import spread\n" + BODY, constants="SCALE = 2.0\n",
                   helpers_b=SPREAD.replace("SCALE = 2.0", "from constants import SCALE")) == in_a


@pytest.mark.parametrize("edit", [
    ("(max(values) - min(values))", "(max(values) - min(values) + 1)"),  # the helper's body
    ("SCALE = 2.0", "SCALE = 3.0"),  # a constant it reads
])
def test_changing_a_moved_helper_makes_a_new_version(version, edit):
    before = version(prediction_module="from helpers_a import spread\n" + BODY, helpers_a=SPREAD)
    after = version(prediction_module="from helpers_b import spread\n" + BODY, helpers_b=SPREAD.replace(*edit))
    assert after != before


def test_a_name_is_content_renaming_a_helper_makes_a_new_version(version):
    before = version(prediction_module="from helpers_a import spread\n" + BODY, helpers_a=SPREAD)
    renamed = SPREAD.replace("def spread", "def value_range")
    # the call renamed with it, or the old name kept by an import alias: the def line changed either way
    assert version(prediction_module="from helpers_a import value_range\n" + BODY.replace("spread(", "value_range("),
                   helpers_a=renamed) != before
    assert version(prediction_module="from helpers_a import value_range as spread\n" + BODY,
                   helpers_a=renamed) != before


def test_formatting_comments_and_docstrings_never_change_a_version(version):
    before = version(prediction_module="from helpers_a import spread\n" + BODY, helpers_a=SPREAD)
    assert version(prediction_module="from helpers_a import spread\n" + BODY.replace("  # the analysis", ""),
                   helpers_a=SPREAD_REFORMATTED) == before


SIDES = '''
SIDES = {">": (lambda effect, t: effect > t), "<": (lambda effect, t: effect < t)}
'''


def test_a_table_of_functions_counts_by_the_source_that_defines_it(version):
    body = BODY.replace("n=3)", "n=3 if SIDES['>'](effect, 1.0) else 2)")
    before = version(prediction_module="from helpers_a import SIDES, spread\n" + body, helpers_a=SPREAD + SIDES)
    assert version(prediction_module="from helpers_b import SIDES, spread\n" + body, helpers_b=SPREAD + SIDES) == before
    assert version(prediction_module="from helpers_a import SIDES, spread\n" + body,
                   helpers_a=SPREAD + SIDES.replace("effect > t", "effect >= t")) != before


FACADE_WRAPPER = '''
import helpers_a as _helpers

def spread(values):
    return _helpers.spread(values)
'''


def test_a_facade_counts_the_function_it_exposes(version):
    # a re-export that renames __module__ is the function itself: the version it had
    before = version(prediction_module="from helpers_a import spread\n" + BODY, helpers_a=SPREAD)
    assert version(prediction_module="from public import spread\n" + BODY, helpers_a=SPREAD,
                   public="from helpers_a import spread\nspread.__module__ = 'public'\n") == before
    # a wrapper is one more part, and the version follows it to the private function it calls
    wrapped = version(prediction_module="from public import spread\n" + BODY, helpers_a=SPREAD, public=FACADE_WRAPPER)
    assert wrapped != before
    assert version(prediction_module="from public import spread\n" + BODY, public=FACADE_WRAPPER,
                   helpers_a=SPREAD.replace("SCALE = 2.0", "SCALE = 3.0")) != wrapped


BAND = '''
class Band:
    WIDTH = 2.0

    def around(self, effect):
        return (effect - self.WIDTH, effect + self.WIDTH)
'''


def test_a_class_renamed_by_a_facade_is_found_where_it_is_defined(version):
    body = BODY.replace("ci=(effect - 1, effect + 1)", "ci=Band().around(effect)")
    before = version(prediction_module="from helpers_a import Band, spread\n" + body, helpers_a=SPREAD + BAND)
    public = "from helpers_a import Band, spread\nBand.__module__ = spread.__module__ = 'public'\n"
    assert version(prediction_module="from public import Band, spread\n" + body, helpers_a=SPREAD + BAND,
                   public=public) == before
    assert version(prediction_module="from public import Band, spread\n" + body, public=public,
                   helpers_a=SPREAD + BAND.replace("effect + self.WIDTH", "effect + 2 * self.WIDTH")) != before


def test_atlas_names_made_public_keep_every_version(monkeypatch):
    """A facade (``atlas.stats``) may give a private function or class a public ``__module__``: still ours,
    still found where it is defined, the same version."""

    def body(prediction):
        effect = atlas.spearman([1, 2, 3], [1, 3, 2])
        prediction.conclude(effect=effect, ci=prediction.bootstrap((np.ones(3),), np.mean, paired=False), n=3)

    before = version_of(body, CRITERION, ())
    for module, public in ((_stats, "atlas.stats"), (_evidence, "atlas.evidence"), (_verdict, "atlas"),
                           (_predict, "atlas")):
        for value in list(vars(module).values()):
            if (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__ == module.__name__:
                monkeypatch.setattr(value, "__module__", public)
    assert atlas.Criterion.__module__ == "atlas" and _stats.Interval.__module__ == "atlas.stats"
    assert version_of(body, CRITERION, ()) == before


def test_the_analysis_covers_the_criterion_class_and_the_library_helpers_a_body_calls():
    from statistics import fmean

    def body(prediction):
        return atlas.spearman([1, 2], [2, 1]) + prediction.bootstrap((np.ones(3),), fmean, paired=False)[0]

    parts = _version.analysis_sources(body, {"prediction": atlas.Prediction}, (atlas.Criterion,))
    assert parts == sorted(set(parts))  # each part once, in a fixed order
    assert any(p.startswith("class Criterion:") or "\nclass Criterion:" in p for p in parts)  # the decision rule
    assert any(p.startswith("def bootstrap(self") for p in parts)  # a method the body calls
    assert any(p.startswith("def bootstrap_ci(") for p in parts)  # and what that method calls in turn
    assert any(p.startswith("def spearman(") for p in parts)  # a library function read as an attribute
    assert not any("def fmean(" in p for p in parts)  # Python's own code does not count
    assert all('"""' not in p for p in parts)  # docstrings removed
