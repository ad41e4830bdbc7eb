"""Measuring on a Ray cluster: each instrument run of a pytest run sent to the cluster as one Ray task.

``pytest predictions/ --atlas-executor ray --atlas-ray-address HOST:PORT`` (or ``RAY_ADDRESS``) measures
the instrument runs the collected predictions need on the cluster's workers before the first prediction,
then judges on this machine as without the option: each prediction finds its runs in the store by CISP's
reuse rule (``atlas._cisp.reusable``) and reads their tables from it. Ray (Moritz et al. 2018, OSDI,
"Ray: a distributed framework for emerging AI applications") schedules the tasks; nothing here is a
scheduler of its own::

    ray start --head --port 6379             # on the head machine; on each other: ray start --address HEAD:6379
    pytest predictions/ --atlas-executor ray --atlas-ray-address HEAD:6379 \\
        --atlas-db postgresql+psycopg://atlas:...@db-host:5432/atlas

What a task is. The unit is the instrument run, the expensive and cacheable step: the steps the plan lists
as "measure" (``atlas._plan.measurements``), each once. A task rebuilds the run's session on its worker from
the controller's options (model, corpus, profile, device, device map, dtype, store URL, protocol-log session) and
measures that one input through CISP (``AtlasSession.measure``), which writes its run and tables to the store in
one transaction. So a task killed part-way writes nothing, and Ray runs it again (``max_retries``); a task that
fails for good fails the run with its error. Its resources: one CPU (``num_cpus``; torch uses as many
threads, so a task's numbers are those of a one-thread run on this machine, bit for bit on the same CPU),
a GPU when the device asks for CUDA, and the memory of the cost model's estimated peak (``atlas._costs``)
where the instrument is calibrated. A step whose estimate exceeds every node's memory is refused before
anything is sent (``DoesNotFit``).

What it needs. A store every worker reaches: PostgreSQL (a SQLite file is one machine's, so it is refused);
the corpus file at the same path on every worker (the bundled ``starter`` is); the same Atlas and packages in
each worker's environment (``ray start`` from that environment). The Lab runs a prediction measures are
trained on this machine first (``LabRuns.prepare``), so on a cluster of several machines the Lab cache
(``ATLAS_CACHE``) must be shared, or each worker that needs a Lab run trains it again (the same bits). Ray is
imported only here, and only with ``--atlas-executor ray`` (the extra ``atlas-landscape[ray]``).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

import pytest

from ._errors import AtlasError, ClusterUnavailable, DoesNotFit, SettingsError
from ._plan import Measurement, measurements
from ._predict import AtlasSession
from ._progress import progress_bar
from ._table import duration

__all__ = ["check_cluster_store", "cluster_address", "fits", "measure_on_cluster", "measure_task"]

#: how often Ray re-runs a task whose worker died (a killed process, a lost node) before the run fails
MAX_RETRIES = 3
#: seconds to wait for the head to accept a connection
CONNECT_TIMEOUT_S = 10


def cluster_address(given: str) -> str:
    """The Ray head's address: the option's, else ``RAY_ADDRESS``; a usage error when neither is set."""
    address = given or os.environ.get("RAY_ADDRESS", "")
    if not address:
        raise SettingsError("--atlas-executor ray needs the cluster's address: --atlas-ray-address HOST:PORT "
                            "or RAY_ADDRESS (start one with: ray start --head)")
    return address


def check_cluster_store(db_url: str) -> None:
    """A run on a cluster writes from every worker to one store: SQLite (one machine's file) is refused."""
    if db_url.startswith("sqlite"):
        raise SettingsError(f"--atlas-executor ray needs a store every worker can reach, not {db_url.split('?')[0]} "
                            "(a SQLite file is one machine's): use --atlas-db postgresql+psycopg://USER:PASSWORD@"
                            "HOST:5432/DB")


def _connect(address: str):
    """``ray`` connected to the cluster at ``address``; ``ClusterUnavailable`` naming the address otherwise."""
    try:
        import ray
    except ImportError:
        raise ClusterUnavailable("--atlas-executor ray needs Ray, which is not installed here: "
                                 "pip install 'atlas-landscape[ray]'") from None
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        _probe(address)  # Ray itself retries an address that does not answer for minutes
        try:
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError or its own by version and cause
            raise ClusterUnavailable(f"cannot reach the Ray cluster at {address}: {str(exc).splitlines()[0]}; "
                                     "start it (ray start --head) or fix --atlas-ray-address / RAY_ADDRESS") from None
    return ray


def _probe(address: str) -> None:
    """``ClusterUnavailable`` unless something accepts a connection at ``address`` (HOST:PORT) within
    ``CONNECT_TIMEOUT_S``; "auto" and ``ray://`` addresses are left to Ray."""
    host, _, port = address.rpartition(":")
    if address == "auto" or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ClusterUnavailable(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}; start it "
                                 "(ray start --head) or fix --atlas-ray-address / RAY_ADDRESS") from None


def fits(steps: list[Measurement], node_memory: list[float]) -> None:
    """Refuse, before anything is sent, the steps whose estimated peak exceeds every node's memory (bytes)."""
    largest = max(node_memory, default=0.0)
    big = [m for m in steps if m.peak_mb is not None and m.peak_mb * 2 ** 20 > largest]
    if big:
        shown = "; ".join(f"{m.instrument} on {m.model}: {m.peak_mb:.0f} MiB" for m in big)
        raise DoesNotFit(f"{len(big)} measurement(s) would not fit the memory of any Ray node (largest "
                         f"{largest / 2 ** 20:.0f} MiB): {shown}; add a larger node or run them with --atlas-executor "
                         "local")


def measure_task(options: dict, step: dict, threads: int) -> tuple[str, bool]:
    """The Ray task: one planned input measured through CISP on this worker, with ``threads`` torch threads.
    ``options``: the controller session's (``_session_options``); returns (run id, whether it was reused)."""
    import torch

    from .lab import LabRuns

    torch.set_num_threads(threads)
    session = AtlasSession(**options)
    session.lab = LabRuns(session.store, session.log, progress=False)
    result = session.measure(step["instrument"], session.model(step["model"]), step["declared"],
                             prediction=step["prediction"])
    return result.run.id, result.reused


def _session_options(session: AtlasSession) -> dict:
    """What a worker needs to rebuild ``session`` (plain values: they travel to the worker); a corpus file by its
    absolute path, since a worker runs in a folder of its own."""
    corpus = Path(session.corpus_path)
    corpus_path = str(corpus.resolve()) if corpus.is_file() else session.corpus_path
    return {"model_name": session.model_name, "corpus_path": corpus_path, "db_url": session.db_url,
            "reports_dir": session.reports_dir, "device": session.device, "dtype": session.dtype,
            "device_map": session.device_map,
            "profile": session.profile, "pair": session.pair, "session_id": session.session_id}


def measure_on_cluster(session: AtlasSession, items: Iterable[pytest.Item], address: str,
                       say: Callable[[str], None] | None = None) -> list[str]:
    """Measure every input the predictions among ``items`` would measure (not reuse) on the Ray cluster at
    ``address``, one task each, and wait for all; returns the stored run ids. A task that fails after its
    retries raises its error here, before any prediction is judged."""
    check_cluster_store(session.db_url)
    ray = _connect(address)  # first: a cluster that cannot be reached is an error even when all is stored
    steps = measurements(session, items)
    if not steps:
        return []
    fits(steps, [n["Resources"].get("memory", 0.0) for n in ray.nodes() if n.get("Alive")])
    task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(measure_task)
    gpu = 1 if str(session.device).startswith("cuda") else 0
    options = _session_options(session)
    pending = {}
    for m in steps:
        memory = {} if m.peak_mb is None else {"memory": int(m.peak_mb * 2 ** 20)}
        resources = {"num_cpus": 1, "num_gpus": gpu, **memory}
        ref = task.options(name=f"measure {m.instrument} on {m.model}", **resources).remote(options, asdict(m), 1)
        pending[ref] = m
    started, done = time.perf_counter(), []
    with progress_bar(total=len(pending), desc=f"measuring on the Ray cluster at {address}", unit="run",
                      enabled=session.live or say is not None) as bar:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            m = pending.pop(ready[0])
            try:
                run_id, reused = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:  # failed for good: its own error, as a local run raises it
                raise exc.cause if isinstance(exc.cause, AtlasError) else exc from None
            done.append(run_id)
            bar.update(1)
            if say is not None:
                say(f"{'reused' if reused else 'measured'} {m.instrument} on {m.model} on the cluster: "
                    f"stored run {run_id[:8]} ({duration(time.perf_counter() - started)} since the start)")
    return done
