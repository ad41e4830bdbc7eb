"""One trainer per Lab run: processes that need one recipe and seed at once, a trainer killed mid-run, a
trajectory with a checkpoint missing, and Lab names and recipes that must be refused before anything is built.

Every process here is a real one (``subprocess``), as ``pytest -n 2`` or two shells start them: each resolves
``lab:RECIPE@SEED`` through its own ``LabRuns`` on one SQLite store and one Lab cache (``ATLAS_CACHE``). The
processes start together: each imports Atlas, then waits for a go file, so their training overlaps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _support import REPO, atlas_command, child_env, record

from atlas import Store, load_model
from atlas.lab import LabError, LabRuns, lab_checkpoint, load_recipe, train

pytestmark = pytest.mark.reliability

PROCESSES = 2

#: a child process: import, say "ready", wait for the go file, resolve the Lab name (saying on stderr when it
#: waits for another process), print its checkpoint
CHILD = """
import sys, time
from pathlib import Path
from atlas import Store
from atlas._store import ProtocolLog
from atlas.lab import LabRuns
name, url, go, session = sys.argv[1:5]
store = Store(url)
print("ready", flush=True)
while not Path(go).exists():
    time.sleep(0.01)
print(LabRuns(store, ProtocolLog(store, session), progress=True)(name), flush=True)
"""


def _start(name: str, url: str, go: Path, session: str, cache: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, name, url, str(go), session], cwd=REPO,
                            env=child_env(ATLAS_CACHE=str(cache)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_ready(process: subprocess.Popen) -> None:
    line = process.stdout.readline()
    assert line.strip() == "ready", f"the child did not start: {line}{process.stderr.read()}"


def _leftovers(cache: Path) -> list[Path]:
    """What a trainer writes only while it trains: partial checkpoint and trajectory files."""
    return [p for p in cache.rglob("*") if ".partial" in p.name]


def _first_line(stream) -> str:
    """The first line on ``stream`` that is not a warning (a library's, at import)."""
    for line in stream:
        if "warn" not in line.lower():
            return line.strip()
    return ""


def _lab_steps(url: str) -> list[tuple[str, str]]:
    return [(e.action, e.reason) for e in Store(url).events() if e.instrument == "lab"]


def test_processes_needing_one_lab_run_at_once_train_it_once(tmp_path):
    """Two processes resolve lab:tiny-modular@7 together: all succeed, one trains, one Lab run is stored."""
    url, go, cache = f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "go", tmp_path / "cache"
    children = [_start("lab:tiny-modular@7", url, go, f"s{i}", cache) for i in range(PROCESSES)]
    for child in children:
        _wait_ready(child)
    go.touch()
    results = [child.communicate(timeout=300) for child in children]
    codes = [child.returncode for child in children]
    assert codes == [0] * PROCESSES, "\n".join(err for _, err in results)
    paths = {out.split()[-1] for out, _ in results}
    assert len(paths) == 1  # the same checkpoint for all
    [run] = Store(url).runs(instrument="lab")
    steps = _lab_steps(url)
    assert sorted(a for a, _ in steps) == ["measured"] + ["reused"] * (PROCESSES - 1)
    assert [r for a, r in steps if a == "measured"][0].startswith("trained in")  # trained once, by one of them
    checkpoint = lab_checkpoint(paths.pop())
    assert [s for s, _ in checkpoint.checkpoints] == checkpoint.recipe.checkpoint_steps
    assert checkpoint.trajectory() is not None and not _leftovers(cache)
    record("processes training one Lab run at once", PROCESSES)


def _long_recipe(tmp_path) -> Path:
    """tiny-modular made long enough (300 steps, a few seconds) to be killed mid-run, as a recipe file."""
    recipe = load_recipe("tiny-modular").updated({"steps": 300, "checkpoints": {"log": 0, "every": 100}})
    path = tmp_path / "long-modular.yaml"
    path.write_text(json.dumps({k: v for k, v in recipe.as_dict().items() if k != "name"}))  # JSON is YAML
    return path


def test_a_killed_trainer_holds_the_run_until_it_dies_then_the_next_process_trains_it_alone(tmp_path):
    """While a trainer lives, a second process needing the run waits and touches nothing; killed (SIGKILL), the
    trainer leaves no run that passes for finished, and the waiting process trains it whole and stores it once."""
    name = f"lab:{_long_recipe(tmp_path)}@0"
    url, go, later, cache = (f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "go", tmp_path / "later",
                             tmp_path / "cache")
    go.touch()
    first, second = _start(name, url, go, "killed", cache), _start(name, url, later, "waiter", cache)
    _wait_ready(first)
    _wait_ready(second)
    deadline = time.monotonic() + 120
    while not list(cache.rglob("step-0/lab.json")) and time.monotonic() < deadline:
        time.sleep(0.01)
    [step0] = list(cache.rglob("step-0"))  # the trainer is under way
    before = step0.stat().st_ino
    later.touch()  # the second process asks for the run now
    said = _first_line(second.stderr)
    assert said.startswith("waiting for another process training long-modular seed 0"), said
    assert first.poll() is None, "the trainer finished before it could be killed: lengthen the recipe"
    assert step0.stat().st_ino == before, "a second process wrote into a run another process is training"
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    checkpoint = lab_checkpoint(out.split()[-1])
    assert [s for s, _ in checkpoint.checkpoints] == checkpoint.recipe.checkpoint_steps
    assert len(checkpoint.trajectory()) == len(checkpoint.recipe.checkpoint_steps) and not _leftovers(cache)
    [(action, reason)] = _lab_steps(url)  # the killed trainer stored nothing
    assert action == "measured" and reason.startswith("trained in")
    record("Lab trainers killed while another process waited", 1)


def test_a_killed_trainers_partial_folders_are_cleaned_and_never_read(tmp_path):
    """What a trainer killed mid-write leaves (its private partial folders, a partial trajectory) is removed by
    the next trainer of the run, which holds the run's lock: no other process can be writing them."""
    run_dir = tmp_path / "tiny-modular" / "seed-0"
    for stale in (".step-10.partial-4242-x1y2", ".step-10.partial", ".step-30.partial-4243-z9"):
        (run_dir / stale).mkdir(parents=True)
        (run_dir / stale / "lab.json").write_text("{}")  # half-written
    (run_dir / "trajectory.json.partial").write_text("{")
    run = train("tiny-modular", seed=0, out=tmp_path, progress=False)
    assert not run.reused and [s for s, _ in run.checkpoints] == run.recipe.checkpoint_steps
    assert not _leftovers(tmp_path)


def test_instruments_reading_a_whole_run_refuse_one_with_a_checkpoint_missing(tmp_path):
    """phase_transitions and algorithmic_branches read every checkpoint the run lists, or refuse: never the part
    of a run that is left (the probe's 100 of 102 checkpoints measured as a complete run)."""
    from atlas.instruments import measure_algorithmic_branches, measure_phase_transitions

    runs = [train("tiny-modular", seed=s, out=tmp_path, progress=False) for s in (0, 1)]
    lm, other = (load_model(str(r.checkpoints[-1][1]), device="cpu") for r in runs)
    shutil.rmtree(runs[0].checkpoints[2][1])  # 5 of 6 checkpoints left
    with pytest.raises(LabError, match="lists 6 checkpoints; missing from disk: step-5;"):
        measure_phase_transitions(lm, None, progress=False)
    with pytest.raises(LabError, match="missing from disk: step-5;"):
        measure_algorithmic_branches(lm, None, other=other, probes=32, chunks=2, permutations=9, progress=False)


@pytest.mark.parametrize("name, message", [
    ("lab:../../x@0", "no recipe"),
    ("lab:../recipes/tiny-modular@0", "no recipe"),
    ("lab:tiny-modular@-1", "seed"),
    ("lab:tiny-modular@99999999999999999999999", "seed"),
    ("lab:tiny-modular@2147483648", "seed"),
    ("lab:tiny-modular@x", "seed"),
])
def test_bad_lab_names_are_refused_before_anything_is_trained(name, message, tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path / "cache"))
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    with pytest.raises(LabError, match=message) as refused:
        load_model(name, device="cpu", lab=LabRuns(store))
    assert "\n" not in str(refused.value)
    assert not store.runs() and not (tmp_path / "cache").exists() and not (REPO / "x").exists()


HUGE = [
    ({"architecture": {"d_model": 10 ** 12, "heads": 1, "kv_heads": 1}}, "architecture.d_model"),
    ({"architecture": {"layers": 10 ** 9}}, "architecture.layers"),
    ({"architecture": {"d_mlp": 2 ** 40}}, "architecture.d_mlp"),
    ({"architecture": {"context": 2 ** 40}}, "architecture.context"),
    ({"data": {"p": 10 ** 9}}, "data.p"),
    ({"steps": 10 ** 15}, "steps"),
    ({"checkpoints": {"every": 1}, "steps": 10 ** 6}, "checkpoints"),
    ({"architecture": {"layers": 64, "d_model": 8192, "heads": 8, "kv_heads": 8, "d_mlp": 32768}}, "parameters"),
    ({"seed": 2 ** 40}, "seed"),
    ({"data": {"split_seed": 2 ** 40}}, "data.split_seed"),
]


def _huge_recipe(tmp_path, change: dict) -> Path:
    """tiny-modular with ``change`` merged in, as a recipe file (the file is read, never trained, when refused)."""
    base = {k: v for k, v in load_recipe("tiny-modular").as_dict().items() if k != "name"}
    for key, value in change.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    path = tmp_path / "huge.yaml"
    path.write_text(json.dumps(base))
    return path


@pytest.mark.parametrize("change, field", HUGE)
def test_absurd_recipe_sizes_are_refused_in_one_line_before_anything_is_built(change, field, tmp_path):
    with pytest.raises(LabError, match=field) as refused:
        load_recipe(_huge_recipe(tmp_path, change))
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("args", [["--seed", "-1"], ["--seed", "2147483648"], ["--seed", "99999999999999999999999"],
                                  ["--huge"]])
def test_atlas_train_with_a_bad_seed_or_a_huge_recipe_is_one_line_exit_2_and_nothing_stored(args, tmp_path):
    recipe = _huge_recipe(tmp_path, HUGE[0][0]) if args == ["--huge"] else "tiny-modular"
    db = f"sqlite:///{tmp_path / 'a.db'}"
    done = atlas_command("train", recipe, *(args if args != ["--huge"] else []), "--out", tmp_path / "out",
                         "--db", db, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert ("seed" if args != ["--huge"] else "architecture.d_model") in lines[0]
    assert not (tmp_path / "out").exists()
    assert not Path(db.removeprefix("sqlite:///")).exists() or not Store(db).runs()
