"""The public API: predictions and benchmarks import nothing private, every public name says where users import
it from (whatever was imported first, and pickles find it there), intervals resample as often as the active profile
says, and ``import atlas`` does not load torch."""

import ast
import doctest
import functools
import importlib
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import atlas
from atlas import PROFILES, Criterion, active_profile, using_profile
from atlas.calibration import Declared, calibrate, judge_evidence
from atlas._profiles import DEFAULT_PROFILE
from atlas.evidence import layer_contrast, mean_profile
from atlas.stats import bootstrap_ci, hierarchical_ci, mean_difference

ROOT = Path(__file__).resolve().parents[1]
#: the public modules: each one's ``__all__`` is its API
PUBLIC = ("atlas", "atlas.calibration", "atlas.evidence", "atlas.instruments", "atlas.lab", "atlas.models",
          "atlas.stats")
#: a profile no run uses, so that its resamples cannot be met by chance
SMALL = replace(PROFILES["quick"], name="small", bootstrap_resamples=123)


# --- (a) predictions and benchmarks import only public names ------------------------------------------------------

def _private(dotted: str) -> bool:
    return any(part.startswith("_") for part in dotted.split("."))


def private_imports(source: str) -> list[str]:
    """Every import of a private Atlas name in a module's source: a private module (``atlas._stats``,
    ``atlas.instruments._lanczos``) or a private name of a public one (``from atlas.instruments.ablation
    import _scan``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "atlas" and _private(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "atlas":
            found += [node.module] if _private(node.module) else []
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return found


def test_the_scan_finds_every_kind_of_private_import():
    source = ("from atlas._stats import t_interval\nimport atlas.instruments._lanczos\n"
              "from atlas.instruments.ablation import _scan, measure_ablation\nfrom atlas import stats\n"
              "import atlas.models\nimport numpy._core\n")
    assert private_imports(source) == ["atlas._stats", "atlas.instruments._lanczos",
                                       "atlas.instruments.ablation._scan"]


@pytest.mark.parametrize("folder", ["predictions", "benchmarks", "docs"])
def test_predictions_and_benchmarks_import_no_private_name(folder):
    modules = sorted((ROOT / folder).glob("*.py"))
    assert modules
    found = {m.name: private_imports(m.read_text(encoding="utf-8")) for m in modules}
    assert {name: imports for name, imports in found.items() if imports} == {}


# --- (b) public names show a public module, which holds them -------------------------------------------------------

def _defined(obj) -> bool:
    """A class or function (not a constant such as ``MODELS``)."""
    return isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__")


def _found_at(obj) -> object:
    return functools.reduce(getattr, obj.__qualname__.split("."), importlib.import_module(obj.__module__))


def public_names() -> list[tuple[str, str, object]]:
    """(public module, name, object) for every class and function a public module exports."""
    modules = [importlib.import_module(m) for m in PUBLIC]
    return [(m.__name__, name, getattr(m, name)) for m in modules for name in m.__all__ if _defined(getattr(m, name))]


def test_every_exported_name_shows_a_public_module_that_holds_it_and_pickles():
    names = public_names()
    assert len(names) > 100
    wrong = {f"{module}.{name}": obj.__module__ for module, name, obj in names
             if obj.__module__.split(".")[0] != "atlas" or _private(obj.__module__) or _found_at(obj) is not obj}
    assert wrong == {}
    assert all(pickle.loads(pickle.dumps(obj)) is obj for _, _, obj in names)


def test_every_name_that_shows_a_public_module_is_found_there():
    """``atlas._public.public`` marks where a name is shown; a mark without the export would make reprs lie and
    pickles fail."""
    public_names()  # imports every public module, and with them the private ones
    shown = {f"{name}.{key}": obj for name, module in list(sys.modules.items()) if name.split(".")[0] == "atlas"
             for key, obj in vars(module).items() if _defined(obj)
             and getattr(obj, "__module__", "").split(".")[0] == "atlas" and not _private(obj.__module__)}
    assert {name: obj.__module__ for name, obj in shown.items() if _found_at(obj) is not obj} == {}


def test_the_public_homes_asked_for():
    stats, models, instruments = (importlib.import_module(m) for m in ("atlas.stats", "atlas.models",
                                                                        "atlas.instruments"))
    assert stats.t_interval.__module__ == "atlas.stats"
    assert atlas.BadInput.__module__ == "atlas"
    assert repr(atlas.Criterion) == "<class 'atlas.Criterion'>"
    assert models.tiny_model.__module__ == "atlas.models"
    assert instruments.lanczos.__module__ == "atlas.instruments"
    assert set(atlas.__all__) == set(atlas._WHERE) and set(atlas.__all__) <= set(dir(atlas))


def test_instances_of_public_classes_pickle():
    for obj in (atlas.BadInput("no such corpus"), Criterion("ratio", ">", 2.0, unit="domains"),
                atlas.Outcome.SUPPORTED, SMALL):
        again = pickle.loads(pickle.dumps(obj))
        assert type(again) is type(obj) and (again == obj or again.args == obj.args)


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_an_error_raised_by_private_code_first_names_atlas():
    """Before any public module is imported, a private module's error already names where users catch it."""
    done = run_python("from atlas._verdict import Criterion\nCriterion('effect', '=>', 0.0)")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("atlas.SettingsError: criterion direction"), done.stderr


def test_a_private_module_imported_first_shows_its_names_public_and_they_pickle():
    done = run_python("import pickle, sys\nimport atlas._stats as s\n"
                      "print(s.t_interval.__module__, 'atlas.stats' in sys.modules)\n"
                      "print(pickle.loads(pickle.dumps(s.t_interval)) is s.t_interval, 'atlas.stats' in sys.modules)")
    assert done.stdout.split() == ["atlas.stats", "False", "True", "True"], done.stderr


@pytest.mark.parametrize("module", ["atlas.stats", "atlas.evidence", "atlas.models", "atlas._profiles"])
def test_the_examples_in_the_public_modules_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted and not result.failed


# --- (c) n_resamples=None: the active profile's bootstrap resamples -----------------------------------------------

def test_intervals_resample_as_often_as_the_active_profile_says():
    x = np.arange(10.0)
    table = pd.DataFrame({"passage_id": np.repeat(np.arange(6), 3), "layer": np.tile([0, 1, 2], 6),
                          "value": np.random.default_rng(0).normal(size=18)})
    assert active_profile().name == DEFAULT_PROFILE
    assert len(bootstrap_ci((x,), np.mean, paired=False).replicates) == PROFILES[DEFAULT_PROFILE].bootstrap_resamples
    with using_profile(SMALL):
        assert active_profile() is SMALL
        assert len(bootstrap_ci((x,), np.mean, paired=False).replicates) == 123
        assert len(hierarchical_ci([["a", "b", "c"], ["d", "e", "f"]], mean_difference).replicates) == 123
        assert len(layer_contrast(mean_profile(table, "value"), {0: 1.0, 2: -1.0})[1].replicates) == 123
        assert len(bootstrap_ci((x,), np.mean, paired=False, n_resamples=50).replicates) == 50  # named: as named
    assert active_profile().name == DEFAULT_PROFILE


def test_calibration_judges_with_its_profile_and_its_resamples():
    seen = []

    def body(prediction):
        seen.append(len(bootstrap_ci((np.arange(10.0),), np.mean, paired=False).replicates))
        prediction.conclude(effect=1.0, ci=(0.5, 1.5), n=10)

    declared = Declared("T-resamples", body, {"criterion": Criterion("mean", ">", 0.0), "needs": ("perplexity",),
                                              "nulls": {"none": lambda rng: {}}}, ROOT / "t.py")
    judge_evidence(declared, {}, SMALL)
    calibrate([declared], reps=1, resamples=77)
    assert seen == [123, 77]
    assert active_profile().name == DEFAULT_PROFILE


PROFILE_MODULE = '''
import numpy as np
import pytest
from atlas import Criterion, active_profile
from atlas.stats import bootstrap_ci

@pytest.mark.prediction(id="T-profile", claim="the body resamples as the run's profile says", needs=("perplexity",),
                        criterion=Criterion("bootstrap resamples", ">", 0.0))
def test_the_body_has_the_runs_profile(prediction):
    n = len(bootstrap_ci((np.arange(10.0),), np.mean, paired=False).replicates)
    assert active_profile() is prediction.profile and n == prediction.profile.bootstrap_resamples == 10000
    prediction.conclude(effect=n, ci=(n, n), n=10)
'''


def test_the_prediction_fixture_makes_the_runs_profile_active_for_the_body(prediction_project, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pytester, _, args = prediction_project(PROFILE_MODULE, 2, "--atlas-model=tiny-gpt2", "--atlas-profile=full")
    result = pytester.runpytest(*args)
    assert result.parseoutcomes().get("passed") == 1, result.stdout.str()
    assert active_profile().name == DEFAULT_PROFILE


# --- (d) import atlas without torch -------------------------------------------------------------------------------

def test_import_atlas_loads_no_torch():
    done = run_python("import sys, atlas\natlas.PROFILES, atlas.using_profile, atlas.AtlasError\n"
                      "print(sorted(m for m in ('torch', 'transformers', 'scipy') if m in sys.modules))")
    assert done.stdout.strip() == "[]", done.stderr
