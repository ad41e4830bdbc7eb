"""Ray as the execution engine (``atlas._cluster``): ``--atlas-executor ray`` measures each instrument run on a
real local Ray cluster (.ci/run starts a head and a worker node on 127.0.0.1: ``.ci/ray``) into the test
PostgreSQL store, then judges here: the same tables, bit for bit, and the same verdicts as a local run; a worker
killed mid-task costs a retry, not a run; bad setups are one usage error."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from atlas import DoesNotFit
from atlas._cluster import fits
from atlas._plan import Measurement
from atlas._store import Store

from _cluster_support import predictions, ray_address as cluster_address


@pytest.fixture
def ray_address():
    return cluster_address()


@pytest.fixture
def project(prediction_project, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as a one-CPU task runs: one torch thread
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return prediction_project(predictions(), 2, "--atlas-model=tiny-gpt2")


def _tables(db: str) -> dict[str, dict[str, pd.DataFrame]]:
    store = Store(db)
    runs = store.runs(status="complete", provenance="measured")
    assert len(runs) == len({r.instrument for r in runs})  # one run per instrument: nothing measured twice
    return {r.instrument: store.tables(r.id) for r in runs}


def _verdicts(db: str) -> dict[str, tuple]:
    return {v.prediction: (v.outcome, v.effect, v.ci_low, v.ci_high, v.n) for v in Store(db).verdicts()}


def _on_cluster(args: list[str], pg: str, address: str) -> list[str]:
    return [*args, f"--atlas-db={pg}", "--atlas-executor=ray", f"--atlas-ray-address={address}"]


@pytest.mark.postgres
def test_the_cluster_gives_the_tables_and_verdicts_of_a_local_run(project, postgres_url, ray_address):
    pytester, db, args = project
    pytester.runpytest_subprocess(*args).assert_outcomes(passed=2)
    run = pytester.runpytest_subprocess(*_on_cluster(args, postgres_url, ray_address))
    run.assert_outcomes(passed=2)
    assert "measured perplexity on tiny-gpt2 on the cluster" in run.stdout.str()
    local, cluster = _tables(db), _tables(postgres_url)
    assert set(local) == set(cluster) == {"perplexity", "coupling"}
    for instrument, tables in local.items():
        assert set(tables) == set(cluster[instrument])
        for name, table in tables.items():
            pd.testing.assert_frame_equal(table, cluster[instrument][name], check_exact=True)
    assert _verdicts(db) == _verdicts(postgres_url)


def _task_pids() -> list[int]:
    """The processes running an Atlas task: Ray titles a worker by its task's name while it runs it."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return [int(line.split(None, 1)[0]) for line in out.splitlines()
            if line.split(None, 1)[1:] and line.split(None, 1)[1].startswith("ray::measure ")]


@pytest.mark.postgres
def test_a_worker_killed_mid_task_is_retried_and_leaves_no_half_written_run(project, postgres_url, ray_address):
    pytester, db, args = project
    command = [sys.executable, "-m", "pytest", *_on_cluster(args, postgres_url, ray_address)]
    run = subprocess.Popen(command, cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed, deadline = None, time.monotonic() + 120
    while killed is None and run.poll() is None and time.monotonic() < deadline:
        pids = _task_pids()
        if pids:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    output, _ = run.communicate(timeout=300)
    assert killed is not None, output  # a task was caught running, and killed
    assert run.returncode == 0, output
    store = Store(postgres_url)
    assert {r.status for r in store.runs()} == {"complete"}  # the killed attempt wrote nothing
    assert {v.prediction: v.outcome for v in store.verdicts()} == {"T-ppl": "supported", "T-coupling": "supported"}
    assert set(_tables(postgres_url)) == {"perplexity", "coupling"}


@pytest.mark.postgres
def test_an_unreachable_head_is_one_usage_error_naming_its_address(project, postgres_url):
    pytester, _, args = project
    run = pytester.runpytest_subprocess(*_on_cluster(args, postgres_url, "127.0.0.1:9"))  # the discard port
    assert run.ret == pytest.ExitCode.USAGE_ERROR
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in run.stdout.str() + run.stderr.str()
    assert Store(postgres_url).runs() == []


def test_a_sqlite_store_and_xdist_are_refused_for_a_cluster(project):
    pytester, _, args = project
    run = pytester.runpytest(*args, "--atlas-executor=ray", "--atlas-ray-address=127.0.0.1:9")
    assert run.ret == pytest.ExitCode.USAGE_ERROR
    assert "a SQLite file is one machine's" in run.stderr.str()
    run = pytester.runpytest(*args, "--atlas-executor=ray", "--atlas-db=postgresql+psycopg://a@127.0.0.1:9/x")
    assert run.ret == pytest.ExitCode.USAGE_ERROR and "needs the cluster's address" in run.stderr.str()
    run = pytester.runpytest(*args, "-n", "2", "--atlas-executor=ray", "--atlas-ray-address=127.0.0.1:9",
                             "--atlas-db=postgresql+psycopg://a@127.0.0.1:9/x")
    assert run.ret == pytest.ExitCode.USAGE_ERROR and "drop -n" in run.stderr.str()


def test_ray_is_not_imported_without_the_option():
    code = "import sys, atlas.plugin, atlas._cluster; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_a_measurement_larger_than_every_node_is_refused_before_it_starts():
    small = Measurement("tiny-gpt2", "perplexity", {}, "T-ppl", peak_mb=300.0)
    large = Measurement("big-model", "hessian", {}, "T-big", peak_mb=9000.0)
    unknown = Measurement("tiny-gpt2", "memory", {}, "T-mem")
    fits([small, unknown], [2.0 * 2 ** 30, 4.0 * 2 ** 30])  # 300 MiB fits a 4 GiB node; no estimate: not refused
    with pytest.raises(DoesNotFit, match=r"largest 4096 MiB.*hessian on big-model: 9000 MiB"):
        fits([small, large], [2.0 * 2 ** 30, 4.0 * 2 ** 30])
