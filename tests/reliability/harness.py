"""Processes for the reliability suite to kill and crowd: run as ``python tests/reliability/harness.py MODE ...``.

The harness imports Atlas once, with one thread per process, and forks a child per job: a child is a
real process running the real entry point (``atlas measure`` through ``atlas.cli.main``, a prediction
session through ``pytest.main``) that starts in a moment instead of importing torch, transformers and
great-expectations anew. Nothing here is test logic: the tests in this folder decide what to check.

    kill MEASURE|PREDICTIONS URL CORPUS SEED KILLS OUT [REPORTS]
        SIGKILL a child at a random moment (seeded) until KILLS kills have landed on a live process;
        first one child runs to its end, to time a whole run (delays are drawn from [0, 1.1 x that]).
    crowd URL CORPUS N OUT
        N children run ``atlas measure`` on one store at once (started together by a barrier).
    open URL[,URL...] N OUT
        for each URL (a new store), N children open it at once (the first-use race).
    import URL SHEET N OUT
        N children ``atlas import`` one sheet into one store at once.

Results are one JSON object in OUT; each child's stdout and stderr are kept in OUT's folder.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import torch  # noqa: E402

torch.set_num_threads(1)

import atlas.cli  # noqa: E402, F401  -- everything a child needs, imported once
import atlas.plugin  # noqa: E402, F401
from atlas._models import load_model  # noqa: E402
from atlas._schema import _batch_definition  # noqa: E402
from atlas._store import Store  # noqa: E402

load_model("tiny-gpt2", device="cpu")  # imports the model code; each child still builds its own model
_batch_definition()  # imports great-expectations and makes its context (each child validates with a copy)

PREDICTIONS = [str(Path(__file__).resolve().parents[2] / "predictions" / name)
               for name in ("test_seed_perplexity_map.py", "test_p5_coupling_by_depth.py")]
INSTRUMENTS = ("perplexity", "coupling")


def measure_args(url: str, corpus: str, instrument: str) -> list[str]:
    return ["measure", instrument, "--model", "tiny-gpt2", "--corpus", corpus, "--db", url, "--no-reuse", "--json"]


def prediction_args(url: str, corpus: str, reports: str) -> list[str]:
    return [*PREDICTIONS, "-q", "-p", "no:cacheprovider", "--atlas-model", "tiny-gpt2", "--atlas-corpus", corpus,
            "--atlas-db", url, "--atlas-reports", reports]


def _child(job, log: Path) -> int:
    """Fork a child that runs ``job()`` with its output in ``log``; returns its pid."""
    pid = os.fork()
    if pid:
        return pid
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    code = 1
    try:
        code = job() or 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 -- a child reports any crash by its exit status and log
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def kill(kind: str, url: str, corpus: str, seed: int, kills: int, out: Path, reports: str = "") -> dict:
    rng = random.Random(seed)
    folder = out.parent

    def job(i: int):
        if kind == "measure":
            return lambda: atlas.cli.main(measure_args(url, corpus, INSTRUMENTS[i % 2]), standalone_mode=False)
        import pytest

        return lambda: int(pytest.main(prediction_args(url, corpus, reports)))

    start = time.monotonic()
    first = _wait(_child(job(0), folder / f"{kind}-whole.log"))
    whole = time.monotonic() - start
    landed, attempts, delays = 0, 0, []
    while landed < kills and attempts < 4 * kills:
        attempts += 1
        delay = rng.uniform(0, 1.1 * whole)
        pid = _child(job(attempts), folder / f"{kind}-{attempts}.log")
        time.sleep(delay)
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == 0:  # still running: the kill lands
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            landed += 1
            delays.append(round(delay / whole, 3))
    return {"kind": kind, "whole_run_s": round(whole, 2), "first_exit": first, "landed": landed,
            "attempts": attempts, "kill_fractions": delays}


def crowd(url: str, corpus: str, n: int, out: Path) -> dict:
    barrier = multiprocessing.Barrier(n)

    def job(i: int):
        def run():
            barrier.wait()
            return atlas.cli.main(measure_args(url, corpus, INSTRUMENTS[i % 2]), standalone_mode=False)

        return run

    pids = [_child(job(i), out.parent / f"crowd-{i}.log") for i in range(n)]
    return {"exits": [_wait(pid) for pid in pids]}


def open_race(urls: list[str], n: int, out: Path) -> dict:
    exits = []
    for round_, url in enumerate(urls):
        barrier = multiprocessing.Barrier(n)

        def run():
            barrier.wait()
            Store(url)
            print("ok")

        pids = [_child(run, out.parent / f"open-{round_}-{i}.log") for i in range(n)]
        exits.append([_wait(pid) for pid in pids])
    return {"exits": exits}


def imports(url: str, sheet: str, n: int, out: Path) -> dict:
    barrier = multiprocessing.Barrier(n)

    def run():
        barrier.wait()
        return atlas.cli.main(["import", sheet, "--db", url, "--json"], standalone_mode=False)

    pids = [_child(run, out.parent / f"import-{i}.log") for i in range(n)]
    return {"exits": [_wait(pid) for pid in pids]}


def main(argv: list[str]) -> None:
    mode, rest = argv[0], argv[1:]
    if mode == "kill":
        kind, url, corpus, seed, kills, out, *reports = rest
        out = Path(out)
        result = kill(kind.lower(), url, corpus, int(seed), int(kills), out, *reports)
    elif mode == "crowd":
        url, corpus, n, out = rest
        out = Path(out)
        result = crowd(url, corpus, int(n), out)
    elif mode == "open":
        urls, n, out = rest
        out = Path(out)
        result = open_race(urls.split(","), int(n), out)
    elif mode == "import":
        url, sheet, n, out = rest
        out = Path(out)
        result = imports(url, sheet, int(n), out)
    else:
        raise SystemExit(f"unknown mode {mode!r}: kill, crowd, open or import")
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
