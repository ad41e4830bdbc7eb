"""The nightly replication as a matrix: every prediction over models × corpora, one pytest run per cell.

``atlas nightly --models gpt2,pythia-160m --corpora domains-v1.jsonl,starter --profile full`` runs
``pytest predictions/`` once per (model, corpus) cell, each with ``--atlas-model`` and ``--atlas-corpus`` set
and the other options shared (profile, store, and ``--atlas-executor ray`` to measure on a cluster: then the
cells run ``cells_at_once`` at a time, the cluster scheduling their instrument runs). Every cell writes to one
store, so what the store already holds is reused (CISP's reuse rule), across cells and across nights. A named
form measures the models it names in every cell: the store measures it once.

Then the night's verdicts: the latest of every prediction on every model, corpus and profile the matrix
touched (``atlas verdicts --json``, written to ``verdicts.json`` beside the report, last night's kept as
``verdicts.previous.json``), the flips against the previous night (``atlas._flips.compare``, written to
``flips.json``), and the matrix as text: one row per prediction, one column per model, a block per corpus, and
the replication of a general claim across models (``supported on 2 of 3 models``). Exit status: 0 no flip,
3 a verdict flipped, 1 a cell crashed (pytest's exit status above 1; the other cells still run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ._flips import Comparison, compare, corpus_matches, load_verdicts
from ._table import aligned

__all__ = ["Cell", "matrix_lines", "night_verdicts", "pytest_args", "rotate", "run_cells", "write_night"]

_SHORT = {"supported": "supported", "refuted": "REFUTED", "inconclusive": "inconcl.", "no_effect": "no effect",
          "not_run": "not run", "error": "ERROR"}


@dataclass(frozen=True)
class Cell:
    """One cell of the matrix: a model name and a corpus (a file, or ``starter``) with its name as sampled
    verdicts carry it (``corpus_name``)."""

    model: str
    corpus: str
    corpus_name: str


def pytest_args(paths: list[str], cell: Cell, options: dict[str, str]) -> list[str]:
    """The pytest command line of one cell: ``paths``, the cell's model and corpus, the shared ``--atlas-*``
    ``options`` (profile, db, reports, executor, ...)."""
    return [sys.executable, "-m", "pytest", *paths, f"--atlas-model={cell.model}", f"--atlas-corpus={cell.corpus}",
            *(f"--atlas-{name}={value}" for name, value in options.items() if value), "-q", "-p", "no:cacheprovider",
            "-rs"]


def run_cells(cells: list[Cell], command: Callable[[Cell], list[str]], *, cells_at_once: int = 1,
              say: Callable[[str], None] = print) -> dict[Cell, int]:
    """Run every cell's pytest, ``cells_at_once`` at a time, each one's output shown when it ends; pytest's exit
    status per cell (0 supported/inconclusive/not run, 1 some refuted, above 1 a crash)."""

    def one(cell: Cell) -> int:
        done = subprocess.run(command(cell), capture_output=True, text=True)
        say(f"--- {cell.model} on {cell.corpus}: pytest exit status {done.returncode}")
        say((done.stdout + done.stderr).rstrip())
        return done.returncode

    with ThreadPoolExecutor(max_workers=max(1, cells_at_once)) as pool:
        return dict(zip(cells, pool.map(one, cells), strict=True))


def night_verdicts(latest: list[dict], cells: list[Cell], profile: str) -> list[dict]:
    """The latest verdicts the matrix touched: on a corpus of its cells, of its profile."""
    return [v for v in latest if v["profile"] == profile and any(corpus_matches(v, c.corpus_name) for c in cells)]


def rotate(out: Path, previous: Path | None) -> Path | None:
    """Keep last night's ``verdicts.json`` as ``verdicts.previous.json`` (unless ``previous`` names a file of
    its own); the file to compare tonight's with, None when there is none."""
    if previous is not None:
        return previous
    last, kept = out / "verdicts.json", out / "verdicts.previous.json"
    if last.is_file():
        last.replace(kept)
    return kept if kept.is_file() else None


def write_night(out: Path, verdicts: list[dict], previous: Path | None) -> Comparison | None:
    """Write ``verdicts.json`` and, when there is a previous night, ``flips.json``; the comparison."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "verdicts.json").write_text(json.dumps({"verdicts": verdicts}) + "\n", encoding="utf-8")
    if previous is None:
        return None
    result = compare(load_verdicts(previous), verdicts)
    (out / "flips.json").write_text(json.dumps({"old": str(previous), "new": str(out / "verdicts.json"),
                                                **result.as_dict()}, indent=1) + "\n", encoding="utf-8")
    return result


def matrix_lines(verdicts: list[dict], cells: list[Cell]) -> list[str]:
    """The matrix as text: per corpus, one row per prediction, one column per model its verdicts are on, and
    the replication across models (how many of the models with a verdict reached support it)."""
    lines = []
    for corpus in dict.fromkeys(c.corpus_name for c in cells):
        here = [v for v in verdicts if corpus_matches(v, corpus)]
        if not here:
            continue
        models = list(dict.fromkeys(v["model"] for v in here))
        rows = []
        for prediction in sorted(dict.fromkeys(v["prediction"] for v in here)):
            mine = {v["model"]: v["outcome"] for v in here if v["prediction"] == prediction}
            reached = [o for o in mine.values() if o not in ("not_run", "error")]
            across = (f"supported on {reached.count('supported')} of {len(reached)} model(s)" if len(mine) > 1
                      else "one model")
            rows.append((prediction, *(_SHORT.get(mine.get(m, ""), "—") for m in models), across))
        lines += [f"corpus {corpus}:", *aligned(("prediction", *models, "across models"), rows, right=set()), ""]
    return lines
