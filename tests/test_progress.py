"""Progress on every long step, in a terminal and in a log (``atlas._progress``): off a terminal a step writes
whole lines at a bounded rate, under pytest through pytest's writer on lines of their own, and nothing with -q."""

import io

import pytest
import tqdm.std
from click.testing import CliRunner

from atlas._progress import LOG_INTERVAL_S, progress_bar, routed
from atlas.cli import main

MODULE = '''
import pytest
from atlas import Criterion

@pytest.mark.prediction(id="T-ppl", claim="perplexity stays below 1e9", needs=("perplexity",),
                        criterion=Criterion("mean ppl", "<", 1e9))
def test_ppl(prediction):
    ppl = prediction.evidence["perplexity"]["perplexity"]["ppl"]
    prediction.conclude(effect=float(ppl.mean()), ci=(float(ppl.min()), float(ppl.max())), n=len(ppl))
'''


@pytest.fixture
def clock(monkeypatch):
    """tqdm's clock, moved by hand: one second a step."""
    now = [1000.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: now[0])
    return now


def test_a_log_gets_a_line_at_start_at_most_one_each_interval_and_one_at_the_end(clock):
    log = io.StringIO()
    steps = 300
    with progress_bar(total=steps, desc="train tiny seed 0", unit="steps", file=log) as bar:
        for _ in range(steps):
            clock[0] += 1.0
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and all(line.startswith("train tiny seed 0: ") for line in lines)
    assert lines[0].startswith("train tiny seed 0: 0/300 steps") and lines[-1].startswith("train tiny seed 0: 300/300")
    assert 4 <= len(lines) <= 2 + steps / LOG_INTERVAL_S, lines  # some lines on the way, never one a step
    assert "<" in lines[1] and "steps/s" in lines[1]  # elapsed < remaining, and the rate


def test_fast_steps_make_two_lines_and_a_disabled_bar_none():
    log = io.StringIO()
    for _ in progress_bar(range(10_000), desc="perplexity m", unit="passages", file=log):
        pass
    assert len(log.getvalue().splitlines()) == 2
    quiet = io.StringIO()
    for _ in progress_bar(range(10), desc="x", file=quiet, enabled=False):
        pass
    assert quiet.getvalue() == ""


def test_routed_lines_go_to_the_owner_of_the_output():
    taken = []
    with routed(taken.append):
        for _ in progress_bar(range(3), desc="coupling m", unit="passages"):
            pass
    assert [line.split(" [")[0] for line in taken] == ["coupling m: 0/3 passages", "coupling m: 3/3 passages"]


def test_atlas_measure_shows_progress_off_a_terminal_and_none_with_json(tmp_path):
    db = f"sqlite:///{tmp_path / 'atlas.db'}"
    args = ["measure", "perplexity", "--model", "tiny-gpt2", "--per-domain", "2", "--db", db]
    shown = CliRunner().invoke(main, [*args, "--no-reuse"])
    assert shown.exit_code == 0, shown.output
    assert [line for line in shown.output.splitlines() if line.startswith("perplexity tiny-gpt2: 0/")]
    quiet = CliRunner().invoke(main, [*args, "--no-reuse", "--json"])
    assert quiet.exit_code == 0 and "perplexity tiny-gpt2: 0/" not in quiet.output


def test_a_prediction_session_in_a_log_shows_each_step_on_lines_of_its_own(prediction_project):
    pytester, _, args = prediction_project(MODULE, 2, "--atlas-model=tiny-gpt2")
    run = pytester.runpytest(*args)
    run.assert_outcomes(passed=1)
    progress = [line for line in run.outlines if "perplexity tiny-gpt2: " in line]
    assert progress and all(line.startswith("  atlas: perplexity tiny-gpt2: ") for line in progress), run.outlines
    assert any("/" in line and " passages [" in line for line in progress)
    quiet = pytester.runpytest(*args, "-q", "--atlas-db", f"sqlite:///{pytester.path / 'quiet.db'}")
    assert not [line for line in quiet.outlines if "perplexity tiny-gpt2: " in line]
