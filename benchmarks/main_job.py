"""The main job, cold and warm: ``pytest predictions/`` on the offline model (quick profile, starter corpus), timed
end to end and per step, for this tree and, side by side in the same invocation, a baseline commit.

* **cold**: a fresh Atlas cache (``ATLAS_CACHE``: no converted offline model, no Lab run) and a fresh store;
* **warm**: the cache the cold run left (models converted, Lab runs trained) and a fresh store, so every
  instrument measures again.

Each run is one ``python -m pytest predictions/`` subprocess in the tree's own folder (the baseline in a git
worktree of ``--baseline``), its store and report in a temporary folder. The per-step times come from that
store: each instrument run's ``ended_at - started_at`` and each Lab training's own ``wall_s``; the outcomes
from its verdicts. The runs take turns (baseline cold, this cold, baseline warm, this warm), so both meet
the same machine; the load average before and after each run is recorded, because a busy machine stretches
every figure. The numbers go to ``--json`` and one table on stdout.

    python benchmarks/main_job.py --json main-job.json                       # this tree: cold, then warm
    python benchmarks/main_job.py --baseline f445a22 --json main-job.json   # and the baseline beside it
    python benchmarks/main_job.py --kinds warm --cache ~/.cache/atlas        # warm only, on a filled cache

A cold run takes about an hour on this project's 2-core CPU; ``--kinds warm --cache DIR`` times warm runs on a
cache that an earlier run filled (the Lab's runs and the converted model are keyed by what made them, so the
baseline and this tree share it where they train the same recipes).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from atlas import Store, package_versions

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="REV", help="a commit timed side by side with this tree")
    parser.add_argument("--kinds", default="cold,warm", help="cold, warm or both (in that order)")
    parser.add_argument("--cache", type=Path, help="the Atlas cache of the runs, of both trees (default: a fresh one "
                                                   "per tree); needed for --kinds warm alone")
    parser.add_argument("--json", type=Path, help="where to write the figures")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (e.g. -k P8)")
    args = parser.parse_args()
    kinds = [k for k in ("cold", "warm") if k in args.kinds.split(",")]
    work = Path(tempfile.mkdtemp(prefix="atlas-main-job-"))
    trees = {"this": ROOT}
    if args.baseline:
        trees["baseline"] = work / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(trees["baseline"]),
                        args.baseline], check=True, capture_output=True)
    if kinds == ["warm"] and args.cache is None:
        raise SystemExit("main_job: a warm run alone needs a filled cache: give --cache DIR (e.g. ~/.cache/atlas)")
    caches = {name: args.cache or work / f"cache-{name}" for name in trees}  # one given cache serves both trees
    results = []
    try:
        for kind in kinds:
            for name in sorted(trees, key=lambda n: n != "baseline"):  # the baseline first, then this tree
                results.append(run(name, trees[name], kind, caches[name], work / f"{name}-{kind}", args.pytest_args))
                print(line(results[-1]), flush=True)
    finally:
        if args.baseline:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees["baseline"])],
                           capture_output=True)
    report = {"benchmark": "main_job", "cpus": len(os.sched_getaffinity(0)), "baseline": args.baseline,
              "packages": package_versions(("torch", "transformers", "atlas-landscape")), "runs": results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def run(name: str, tree: Path, kind: str, cache: Path, folder: Path, extra: list[str]) -> dict:
    """One main job in ``tree``: wall time, exit status, outcomes and per-step seconds from its own store."""
    folder.mkdir(parents=True)
    if kind == "cold" and cache.exists() and any(cache.iterdir()):
        raise SystemExit(f"main_job: the cold run's cache {cache} is not empty: give a fresh --cache folder")
    db = f"sqlite:///{folder}/atlas.db"
    command = [sys.executable, "-m", "pytest", "predictions/", "-p", "no:cacheprovider", f"--atlas-db={db}",
               f"--atlas-reports={folder / 'reports'}", *extra]
    env = {**os.environ, "ATLAS_CACHE": str(cache), "PYTHONPATH": str(tree)}
    load_before = os.getloadavg()
    started = time.perf_counter()
    with open(folder / "pytest.log", "w") as log:
        status = subprocess.run(command, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall_s = time.perf_counter() - started
    store = Store(db)
    steps = [{"instrument": r.instrument, "model": r.model,
              "seconds": round(r.settings["wall_s"] if r.instrument == "lab" else
                               (r.ended_at - r.started_at).total_seconds(), 1)}
             for r in store.runs(status="complete")]
    outcomes = collections.Counter(v.outcome for v in store.latest_verdicts())
    return {"tree": name, "kind": kind, "wall_s": round(wall_s, 1), "exit": status, "outcomes": dict(outcomes),
            "load_before": load_before, "load_after": os.getloadavg(), "log": str(folder / "pytest.log"),
            "steps": sorted(steps, key=lambda s: -s["seconds"])}


def line(result: dict) -> str:
    costliest = ", ".join(f"{s['instrument']} {s['model']} {s['seconds']:.0f} s" for s in result["steps"][:4])
    return (f"{result['tree']:8} {result['kind']:4} {result['wall_s'] / 60:6.1f} min  exit {result['exit']}  "
            f"{dict(result['outcomes'])}  load {result['load_before'][0]:.1f}->{result['load_after'][0]:.1f}  "
            f"costliest: {costliest}")


if __name__ == "__main__":
    main()
