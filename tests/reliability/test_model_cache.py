"""The converted-model cache under concurrency and kills: one process builds, the others wait and use it;
a builder killed mid-way leaves only a partial folder, which the next builder removes."""

import multiprocessing
import os
import signal
import time

import pytest
from _support import record

from atlas._models import build_once

pytestmark = pytest.mark.reliability


def _slow_build(where, log):
    where.mkdir()
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(0.5)
    (where / "config.json").write_text("{}")


def _build(target, log):
    build_once(target, lambda where: _slow_build(where, log), done=lambda d: (d / "config.json").is_file())


def test_four_processes_asking_at_once_build_the_cache_once(tmp_path):
    target, log = tmp_path / "cache" / "model-abc", tmp_path / "builds.log"
    fork = multiprocessing.get_context("fork")
    workers = [fork.Process(target=_build, args=(target, log)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0] * 4
    assert len(log.read_text().split()) == 1 and (target / "config.json").is_file()
    assert not list(target.parent.glob("*.partial"))
    record("concurrent writers held (model cache)", 4)


def test_a_builder_killed_mid_way_leaves_no_half_written_cache(tmp_path):
    target, log = tmp_path / "cache" / "model-abc", tmp_path / "builds.log"
    fork = multiprocessing.get_context("fork")
    victim = fork.Process(target=_build, args=(target, log))
    victim.start()
    deadline = time.monotonic() + 30
    while not log.exists() and time.monotonic() < deadline:  # it is building
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    assert not target.exists() and list(target.parent.glob("*.partial"))
    _build(target, log)
    assert (target / "config.json").is_file() and not list(target.parent.glob("*.partial"))
    record("SIGKILLs survived", 1)
