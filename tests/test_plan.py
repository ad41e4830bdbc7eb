"""A plan before the run (``atlas._plan``): ``--atlas-plan`` and ``atlas plan`` list what a run would train,
measure and reuse, with estimates from the calibrated cost model (``atlas._costs``), and run nothing."""

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from atlas import load_corpus
from atlas._costs import calibrated, fit_cost
from atlas._store import Store
from atlas.cli import main
from atlas.instruments import INSTRUMENTS

UNCALIBRATED = next(name for name in INSTRUMENTS if name not in calibrated())

MODULE = '''
from pathlib import Path

import pytest
from atlas import Criterion

def body_ran(name):
    Path(name).write_text("ran")

@pytest.mark.prediction(id="T-ppl", claim="perplexity stays below 1e9", needs=("perplexity", "coupling"),
                        criterion=Criterion("mean ppl", "<", 1e9))
def test_ppl(prediction):
    body_ran("T-ppl.ran")
    ppl = prediction.evidence["perplexity"]["perplexity"]["ppl"]
    prediction.conclude(effect=float(ppl.mean()), ci=(float(ppl.min()), float(ppl.max())), n=len(ppl))

@pytest.mark.prediction(id="T-same", claim="the same input, asked again", needs=("perplexity",),
                        criterion=Criterion("mean ppl", "<", 1e9))
def test_same(prediction):
    body_ran("T-same.ran")
    ppl = prediction.evidence["perplexity"]["perplexity"]["ppl"]
    prediction.conclude(effect=float(ppl.mean()), ci=(float(ppl.min()), float(ppl.max())), n=len(ppl))
'''

MORE = f'''
@pytest.mark.prediction(id="T-lab", claim="a Lab run", needs=("perplexity",), model="lab:tiny-modular@7",
                        criterion=Criterion("mean ppl", "<", 1e9))
def test_lab(prediction):
    body_ran("T-lab.ran")

@pytest.mark.prediction(id="T-hub", claim="a model not on this machine", needs=("perplexity",), model="gpt2",
                        criterion=Criterion("mean ppl", "<", 1e9))
def test_hub(prediction):
    body_ran("T-hub.ran")

@pytest.mark.prediction(id="T-new", claim="an instrument not calibrated", needs=("{UNCALIBRATED}",),
                        criterion=Criterion("x", "<", 1e9))
def test_new(prediction):
    body_ran("T-new.ran")
'''


def _plan(output: str) -> list[str]:
    """The plan's lines (header to total) in a pytest or ``atlas plan`` output."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Atlas plan: "))
    end = next(i for i, line in enumerate(lines) if line.startswith("total: "))
    return lines[start:end + 1]


def _step(plan: list[str], action: str, instrument: str, model: str) -> str:
    found = [line for line in plan if re.match(rf"{action} +{instrument} +{re.escape(model)} ", line)]
    assert len(found) == 1, plan
    return found[0]


@pytest.fixture
def project(prediction_project, monkeypatch, tmp_path):
    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path / "cache"))  # no Lab run trained yet
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # gpt2 is not run, and the hub is never asked
    return prediction_project(MODULE, 2, "--atlas-model=tiny-gpt2")


def test_the_plan_runs_nothing_and_lists_every_step(project):
    pytester, db, args = project
    run = pytester.runpytest(*args, "--atlas-plan")
    assert run.ret == pytest.ExitCode.OK
    plan = _plan(run.stdout.str())
    assert plan[0].startswith("Atlas plan: profile quick, corpus corpus") and "store sqlite:///" in plan[0]
    perplexity = _step(plan, "measure", "perplexity", "tiny-gpt2")
    assert "T-ppl, T-same" in perplexity  # one step for both: the session measures it once
    cost, passages = calibrated()["perplexity"], len(load_corpus(str(pytester.path / "corpus.jsonl")).passages)
    seconds = cost.seconds(66_592, passages)  # tiny-gpt2's parameters, every passage of the project's corpus
    assert f"{seconds:.1f} s" in perplexity and f"{cost.peak_mb(66_592):.0f} MiB" in perplexity
    _step(plan, "measure", "coupling", "tiny-gpt2")
    assert len(plan) == 5 and plan[-1].startswith("total: 0 to train, 2 to measure, 0 to reuse, 0 not run")
    assert not list(pytester.path.glob("*.ran"))  # no body ran
    store = Store(db)
    assert store.runs() == [] and store.verdicts() == [] and store.events() == []


def test_after_a_run_the_plan_reuses_its_steps(project):
    pytester, db, args = project
    pytester.runpytest(*args).assert_outcomes(passed=2)
    runs = {r.instrument: r.id[:8] for r in Store(db).runs()}
    plan = _plan(pytester.runpytest(*args, "--atlas-plan").stdout.str())
    assert runs["perplexity"] in _step(plan, "reuse", "perplexity", "tiny-gpt2")
    assert runs["coupling"] in _step(plan, "reuse", "coupling", "tiny-gpt2")
    assert plan[-1].startswith("total: 0 to train, 0 to measure, 2 to reuse, 0 not run; estimated 0.0 s")
    other = _plan(pytester.runpytest(*args, "--atlas-plan", "--atlas-model=tiny-llama").stdout.str())
    _step(other, "measure", "perplexity", "tiny-llama")  # another model, another key


def test_a_lab_run_not_trained_is_to_train_and_a_model_not_here_is_not_run(project):
    pytester, db, args = project
    pytester.makepyfile(test_predictions=MODULE + MORE)
    plan = _plan(pytester.runpytest(*args, "--atlas-plan").stdout.str())
    assert "no estimate (recipe tiny-modular not timed)" in _step(plan, "train", "lab", "lab:tiny-modular@7")
    after = _step(plan, "measure", "perplexity", "lab:tiny-modular@7")  # rated at the recipe's shape
    assert re.search(r"after training lab:tiny-modular@7; rated at [\d,]+ parameters", after) and " MiB " in after
    assert "model 'gpt2' (openai-community/gpt2) is not available" in _step(plan, "not run", "perplexity", "gpt2")
    assert "no estimate (uncalibrated)" in _step(plan, "measure", UNCALIBRATED, "tiny-gpt2")
    assert plan[-1].startswith("total: 1 to train, 4 to measure, 0 to reuse, 1 not run; estimated ")
    assert "2 step(s) without an estimate" in plan[-1]
    assert not list(pytester.path.glob("*.ran")) and Store(db).runs() == []
    assert not (Path(os.environ["ATLAS_CACHE"]) / "lab").exists()  # nothing trained


def test_a_model_is_rated_at_a_whole_number_of_parameters():
    """The registry writes counts as the model cards do (135e6); the plan's notes print them whole."""
    from atlas._plan import _parameters

    assert f"{_parameters('smollm2-135m-instruct'):,}" == "135,000,000"
    assert f"{_parameters('lab:finetune-smollm2'):,}" == "135,000,000"  # a fine-tune: its initial model's count
    assert _parameters("no-such-model") is None


def test_a_lab_run_trained_is_listed_as_trained(project):
    pytester, db, args = project
    pytester.makepyfile(test_predictions=MODULE + MORE)
    trained = CliRunner().invoke(main, ["train", "tiny-modular", "--seed", "7", "--db", db, "--json"])
    assert trained.exit_code == 0, trained.output
    plan = _plan(pytester.runpytest(*args, "--atlas-plan", "-k", "T-lab").stdout.str())
    assert "T-lab" in _step(plan, "trained", "lab", "lab:tiny-modular@7")
    assert " MiB " in _step(plan, "measure", "perplexity", "lab:tiny-modular@7")  # loaded: an estimate
    assert plan[-1].startswith("total: 0 to train, 1 to measure, 0 to reuse, 0 not run")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="trains side by side on two cores or more")
def test_a_run_trains_the_lab_runs_it_needs_side_by_side_first(project):
    """The Lab runs the collected predictions need are trained in worker processes before the first prediction
    (LabRuns.prepare), then each is stored when its prediction loads it."""
    pytester, db, args = project
    pytester.makepyfile(test_predictions=MODULE + MORE.replace('model="lab:tiny-modular@7"',
                                                               'model=("lab:tiny-modular@7", "lab:tiny-modular@8")'))
    run = pytester.runpytest(*args, "-k", "T-lab")
    assert re.search(r"atlas: train 2 Lab runs, 2 at a time: 2/2 runs", run.stdout.str()), run.stdout.str()
    assert sorted(r.model for r in Store(db).runs(instrument="lab")) == ["lab:tiny-modular@7", "lab:tiny-modular@8"]


def test_atlas_plan_prints_the_same_plan(project, monkeypatch):
    pytester, db, args = project
    expected = _plan(pytester.runpytest(*args, "--atlas-plan").stdout.str())
    monkeypatch.chdir(pytester.path)
    corpus = next(a for a in args if a.startswith("--atlas-corpus=")).split("=", 1)[1]
    result = CliRunner().invoke(main, ["plan", "test_predictions.py", "--model", "tiny-gpt2", "--corpus", corpus,
                                       "--db", db])
    assert result.exit_code == 0, result.output
    assert _plan(result.output) == expected
    assert "T-same" not in CliRunner().invoke(main, ["plan", "test_predictions.py", "-k", "T-ppl", "--model",
                                                     "tiny-gpt2", "--corpus", corpus, "--db", db]).output


def test_the_plan_is_refused_with_xdist(project):
    pytester, _, args = project
    run = pytester.runpytest(*args, "--atlas-plan", "-n", "2")
    assert run.ret == pytest.ExitCode.USAGE_ERROR and "--atlas-plan lists what this process collects" in run.stderr.str()


def test_the_cost_model_fits_its_timings():
    cost = fit_cost([(1e5, 10, 1.0, 20.0), (1e6, 10, 10.0, 110.0), (1e7, 10, 100.0, 1010.0)])
    assert cost.seconds(1e8, 10) == pytest.approx(1000.0) and cost.s0 == pytest.approx(0.0, abs=1e-9)
    assert cost.peak_mb(1e8) == pytest.approx(10010.0)
    through_zero = fit_cost([(1e5, 10, 0.5, 5.0), (1e6, 10, 20.0, 50.0)])  # a negative fixed cost is none
    assert through_zero.s0 == 0.0 and through_zero.seconds(1e6, 10) == pytest.approx(19.8, rel=1e-2)
    for name, entry in calibrated().items():
        assert entry.a >= 0 and entry.s0 >= 0 and entry.b >= 0 and entry.m0 >= 0, name


def test_a_lab_training_is_estimated_from_its_recipes_timed_training_scaled_by_steps(monkeypatch):
    import atlas._costs
    from atlas._plan import _training

    timed = {"lab": {"tiny-modular": {"steps": 10, "seconds": 2.0, "peak_mb": 50.0}}}
    monkeypatch.setattr(atlas._costs, "_calibration", lambda: timed)
    step = _training("lab:tiny-modular@3")  # the recipe trains 30 steps
    assert (step.action, step.seconds, step.peak_mb, step.note) == ("train", pytest.approx(6.0), 50.0, "")
    timed["lab"] = {}
    assert _training("lab:tiny-modular@3").note == "no estimate (recipe tiny-modular not timed)"


def test_the_protocol_log_puts_each_measurement_beside_the_plan(project):
    pytester, db, args = project
    pytester.runpytest(*args).assert_outcomes(passed=2)
    measured = {e.instrument: e.reason for e in Store(db).events() if e.action == "measured"}
    pattern = r"no stored run with these settings; took [\d.]+ (s|min), the plan expected [\d.]+ (s|min)"
    assert re.fullmatch(pattern, measured["perplexity"]), measured
    assert re.fullmatch(pattern, measured["coupling"]), measured
    log = (pytester.path / "reports" / "log.html").read_text(encoding="utf-8")
    assert "the plan expected" in log  # the report's protocol log shows it, step by step
