"""Crash safety: SIGKILL ``atlas measure`` and prediction sessions at random moments, then check the store.

A run is written with its rows and its protocol-log step in one transaction, so a kill leaves all of it or
none: "running" is never stored, and a process killed before its commit leaves no row at all (no started
marker is written: an append-only store could never turn it into "complete", and a killed session is told
apart by its missing ``SESSION_COMPLETE`` instead). The kill moments are drawn from a seeded generator over
the length of one whole run, so they fall in start-up, model building, measuring and writing alike.
"""

import json

import pytest
from _support import atlas_command, check_store, harness, record
from sqlalchemy import text

from atlas import Store

pytestmark = pytest.mark.reliability

KILLS = {"measure": 12, "predictions": 10}  # per backend: SQLite gets both, PostgreSQL too when it is there


def _survives_kills(kind: str, url: str, tiny_corpus, tmp_path, seed: int) -> dict:
    out = tmp_path / f"{kind}.json"
    result = harness("kill", kind, url, tiny_corpus, seed, KILLS[kind], out, tmp_path / "reports", out=out)
    assert result["first_exit"] in (0, 1), f"the whole {kind} run failed: see {tmp_path}/{kind}-whole.log"
    assert result["landed"] >= KILLS[kind]
    held = check_store(url)
    record("SIGKILLs survived", result["landed"])
    return {**result, **held}


@pytest.mark.parametrize("seed", [13])
def test_killed_measurements_leave_only_whole_runs_and_the_next_run_reuses_a_complete_one(store_url, tiny_corpus,
                                                                                          tmp_path, seed):
    held = _survives_kills("measure", store_url, tiny_corpus, tmp_path, seed)
    assert held["complete"] >= 1  # the whole run at least
    done = atlas_command("measure", "perplexity", "--model", "tiny-gpt2", "--corpus", tiny_corpus, "--db",
                         store_url, "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["reused"]
    run = Store(store_url).run(out["run_id"])
    assert run.status == "complete" and len(out["rows"]) == 16
    check_store(store_url)


@pytest.mark.parametrize("seed", [29])
def test_killed_prediction_sessions_leave_whole_verdicts_and_marked_partial_sessions(store_url, tiny_corpus,
                                                                                     tmp_path, seed):
    held = _survives_kills("predictions", store_url, tiny_corpus, tmp_path, seed)
    assert held["sessions_complete"] >= 1 and held["verdicts"] >= 1
    store = Store(store_url)
    before = {v.id for v in store.verdicts()}
    again = tmp_path / "again.json"  # one more whole session, killed never
    done = harness("kill", "predictions", store_url, tiny_corpus, seed, 0, again, tmp_path / "reports", out=again)
    assert done["first_exit"] in (0, 1)  # 1: a refuted prediction is a result
    after = check_store(store_url)
    new = [v for v in store.verdicts() if v.id not in before]
    assert new and {v.session for v in new} <= store.complete_sessions()
    reused = [e for e in store.events() if e.action == "reused" and e.session == new[0].session]
    assert reused and all(store.run(e.run_id).status == "complete" for e in reused)
    assert after["partial_verdicts"] == held["partial_verdicts"]  # the new session is complete
    if store.engine.dialect.name == "sqlite":
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
