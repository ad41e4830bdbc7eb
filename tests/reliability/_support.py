"""Helpers of the reliability suite: processes to kill and crowd (``harness.py``), the store's invariants after
them, and the figures the suite reports (``record``; summed at the end of the run, see ``tests/conftest.py``).

``ATLAS_FUZZ_EXAMPLES`` sets the examples each fuzz test runs: 100 by default, 1000 in CI (``.ci/run``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from atlas import INSTRUMENTS, Store
from atlas._store import SESSION_COMPLETE

REPO = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).with_name("harness.py")
FIGURES = REPO / "reports" / "reliability-figures.jsonl"
FUZZ_EXAMPLES = int(os.environ.get("ATLAS_FUZZ_EXAMPLES", "100"))

#: a prediction module whose named model (GPT-2) is never in the test cache: its session reports "not run",
#: writes the report and stores nothing of a measurement
NOT_RUN = '''
import pytest
from atlas import Criterion

@pytest.mark.prediction(id="T-not-run", claim="needs real GPT-2", model="gpt2", form="named", needs=("perplexity",),
                        criterion=Criterion("a ratio", ">", 0.5))
def test_not_run(prediction):
    raise AssertionError("never reached: gpt2 is not in the cache")
'''


def record(figure: str, value: int) -> None:
    """Add ``value`` to one of the suite's figures (kills survived, writers held, ...)."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"figure": figure, "value": value}) + "\n")


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a process the suite starts: this checkout's atlas first, offline, one thread."""
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "GX_ANALYTICS_ENABLED": "false",
           "OMP_NUM_THREADS": "1"}
    return {**env, **extra}


def harness(*args, out: Path, timeout: float = 900) -> dict:
    """Run ``harness.py`` with ``args`` (``out``: where it writes its JSON result) and return the result."""
    done = subprocess.run([sys.executable, str(HARNESS), *map(str, args)], env=child_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"harness failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(Path(out).read_text())


def atlas_command(*args, timeout: float = 600, **env) -> subprocess.CompletedProcess:
    """The ``atlas`` console command of this checkout, as a user runs it."""
    return subprocess.run([sys.executable, "-c", "from atlas.cli import main; main()", *map(str, args)],
                          env=child_env(**env), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def check_store(url: str) -> dict:
    """Assert every invariant a crash must not break, and return what the store holds.

    SQLite's ``integrity_check`` is ok; every run is complete or failed (never "running"); a complete run has
    rows in each of its instrument's measured tables and, per derivation, in each summary table; a failed run
    has none; no row lacks its run; every run has its protocol-log step; every verdict's input runs exist and
    are complete."""
    store = Store(url)
    with store.engine.connect() as conn:
        if store.engine.dialect.name == "sqlite":
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        orphans = conn.execute(text("SELECT count(*) FROM measurement m LEFT JOIN run r ON r.id = m.run_id "
                                    "WHERE r.id IS NULL")).scalar()
        logged = {row[0] for row in conn.execute(text("SELECT DISTINCT run_id FROM protocolevent "
                                                      "WHERE action IN ('measured', 'failed')"))}
        rows = {(r[0], r[1], r[2]): r[3] for r in conn.execute(text(
            "SELECT run_id, table_name, derivation, count(*) FROM measurement "
            "GROUP BY run_id, table_name, derivation"))}
    assert orphans == 0, f"{orphans} measurement rows without their run"
    runs = store.runs()
    for run in runs:
        assert run.status in ("complete", "failed"), f"run {run.id} stored as {run.status!r}"
        tables = {(t, d) for (rid, t, d) in rows if rid == run.id}
        if run.status == "failed":
            assert not tables, f"failed run {run.id} has rows"
        elif run.provenance == "measured":
            inst = INSTRUMENTS[run.instrument]
            assert {(t, "") for t in inst.measures} <= tables, f"run {run.id} lacks measured tables: {tables}"
            for derivation in store.derivations(run.id):
                summaries = {(t, derivation.key) for t in inst.summaries}
                assert summaries <= tables, f"derivation {derivation.key} lacks tables"
        if run.provenance == "measured":
            assert run.id in logged, f"run {run.id} is missing from the protocol log"
    complete = {r.id for r in runs if r.status == "complete"}
    verdicts = store.verdicts()
    for v in verdicts:
        assert set(v.run_ids) <= complete, f"verdict {v.id} ({v.prediction}) cites runs that are not complete"
    sessions = store.complete_sessions()
    store.engine.dispose()
    return {"runs": len(runs), "complete": len(complete), "failed": len(runs) - len(complete),
            "verdicts": len(verdicts), "partial_verdicts": sum(v.session not in sessions for v in verdicts),
            "sessions_complete": len(sessions)}


def all_text(url: str) -> str:
    """Every row of every Atlas table, as text (to search for what must never be stored)."""
    store = Store(url)
    with store.engine.connect() as conn:
        dump = "\n".join(str(tuple(row)) for table in ("run", "measurement", "derivation", "verdictrecord",
                                                         "protocolevent", "judgment")
                         for row in conn.execute(text(f"SELECT * FROM {table}")))
    store.engine.dispose()
    return dump


__all__ = ["FUZZ_EXAMPLES", "REPO", "SESSION_COMPLETE", "all_text", "atlas_command", "check_store", "child_env",
           "harness", "record"]
