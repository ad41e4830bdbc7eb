"""`atlas new`: a newcomer's steps from an empty folder, as the guide gives them (``atlas._scaffold``).

A new prediction is judged at once on tiny-gpt2 and stored, its outcome tests pass (it can come out either
way), and ``atlas calibrate --check`` finds its declared null. A new instrument is written into a copy of this
checkout -- never into the checkout itself -- and, from there, registers, measures through CISP (``atlas
measure``) and passes its own tests in fresh processes that import the copy.
"""

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from atlas import Store
from atlas._catalog import registration
from atlas.cli import main

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = {"supported", "refuted", "inconclusive", "no_effect"}


def atlas(*args: str):
    return CliRunner().invoke(main, list(args))


def test_a_new_prediction_is_judged_at_once_and_can_come_out_either_way(pytester):
    written = atlas("new", "prediction", "my_claim", "--dir", str(pytester.path))
    assert written.exit_code == 0, written.output
    module = pytester.path / "predictions" / "test_my_claim.py"
    outcomes = pytester.path / "tests" / "test_my_claim_outcomes.py"
    assert f"pytest {module.relative_to(pytester.path)} --atlas-model tiny-gpt2" in written.output.replace(
        str(pytester.path) + os.sep, "")
    source = module.read_text()
    assert len(source.splitlines()) <= 80
    for written_module in (module, outcomes):  # the public API only
        imported = {n.module for n in ast.walk(ast.parse(written_module.read_text())) if isinstance(n, ast.ImportFrom)}
        assert not [m for m in imported if m.startswith("atlas") and "._" in f".{m}"], imported

    db = f"sqlite:///{pytester.path / 'atlas.db'}"
    run = pytester.runpytest(str(module), "--atlas-model=tiny-gpt2", f"--atlas-db={db}", "-p", "no:cacheprovider")
    [verdict] = Store(db).latest_verdicts()
    assert verdict.prediction == "my_claim" and verdict.outcome in OUTCOMES, verdict.reason
    assert verdict.model == "tiny-gpt2" and verdict.n == 24 and verdict.evidence["n_unit"] == "passages"
    assert verdict.evidence["scope"].startswith("in tiny-gpt2")
    run.stdout.fnmatch_lines([f"*= 1 {verdict.outcome.replace('_', ' ')} in *"])  # printed as judged

    pytester.runpytest(str(outcomes), "-p", "no:cacheprovider").assert_outcomes(passed=3)
    checked = atlas("calibrate", "my_claim", "--predictions", str(module.parent), "--reps", "10", "--resamples",
                    "200", "--check")
    assert checked.exit_code == 0 and "equally hard" in checked.output, checked.output


def test_a_bad_name_or_an_existing_file_is_refused_in_one_line_and_nothing_is_written(tmp_path, monkeypatch):
    for name in ("my-claim", "MyClaim", "class", "1st", ""):
        refused = atlas("new", "prediction", name, "--dir", str(tmp_path))
        assert refused.exit_code == 2 and refused.output.count("\n") == 1 and "identifier" in refused.output
    assert not list(tmp_path.iterdir())
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_mine_outcomes.py").write_text("")
    refused = atlas("new", "prediction", "mine", "--dir", str(tmp_path))
    assert refused.exit_code == 2 and refused.output.count("\n") == 1 and "exists already" in refused.output
    assert not (tmp_path / "predictions").exists()  # all or nothing

    refused = atlas("new", "instrument", "perplexity")  # the real checkout: refused before anything is written
    assert refused.exit_code == 2 and refused.output.count("\n") == 1 and "exists already" in refused.output
    monkeypatch.setattr("atlas._scaffold._PACKAGE", tmp_path / "site-packages" / "atlas")
    refused = atlas("new", "instrument", "my_probe")
    assert refused.exit_code == 2 and "checkout of Atlas" in refused.output


@pytest.fixture
def checkout(tmp_path):
    """A copy of this checkout's package, schemas and test configuration."""
    copy = tmp_path / "atlas-checkout"
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "atlas", copy / "atlas", symlinks=True, ignore=skip)  # atlas/schema -> ../schema
    shutil.copytree(ROOT / "schema", copy / "schema", ignore=skip)
    (copy / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", copy / "tests")
    shutil.copy(ROOT / "pyproject.toml", copy)
    return copy


def in_checkout(copy: Path, *args: str) -> subprocess.CompletedProcess:
    """``python ARGS`` in the copy, importing its atlas (ahead of the installed one)."""
    return subprocess.run([sys.executable, *args], cwd=copy, env={**os.environ, "PYTHONPATH": str(copy)},
                          capture_output=True, text=True, timeout=300)


CLI = ("-c", "from atlas.cli import main; main()")


def test_a_new_instrument_registers_measures_through_cisp_and_passes_its_tests(checkout):
    written = in_checkout(checkout, *CLI, "new", "instrument", "my_probe")
    assert written.returncode == 0, written.stderr
    for path in ("atlas/instruments/my_probe.py", "schema/my_probe.yaml", "tests/test_my_probe.py"):
        assert (checkout / path).is_file() and not (ROOT / path).exists()
    init = ast.parse((checkout / "atlas" / "instruments" / "__init__.py").read_text())
    assert registration(init).names[-1].name == "my_probe"  # registered on the line the package imports
    schema = yaml.safe_load((checkout / "schema" / "my_probe.yaml").read_text())
    assert schema["table"] == schema["instrument"] == "my_probe"

    db = f"sqlite:///{checkout / 'atlas.db'}"
    measured = in_checkout(checkout, *CLI, "measure", "my_probe", "--model", "tiny-gpt2", "--per-domain", "1",
                           "--db", db, "--json")
    assert measured.returncode == 0, measured.stderr
    out = json.loads(measured.stdout)
    assert out["instrument"] == "my_probe" and len(out["rows"]) == 8
    assert all(0 < row["mean_max_prob"] <= 1 and row["mean_entropy"] > 0 for row in out["rows"])

    tested = in_checkout(checkout, "-m", "pytest", "tests/test_my_probe.py", "-q", "-p", "no:cacheprovider")
    assert tested.returncode == 0 and "5 passed" in tested.stdout, tested.stdout[-3000:]
    again = in_checkout(checkout, *CLI, "new", "instrument", "my_probe")
    assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr
