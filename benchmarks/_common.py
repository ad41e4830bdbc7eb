"""What every benchmark script shares: measuring a call, printing its one table, writing ``--json``.

* ``measure(fn)``: wall time (``time.perf_counter``) and peak resident memory of one call,
  as the largest resident set size (RSS, ``psutil``) sampled every 5 ms by a thread while
  the call runs, minus the RSS at its start. Before the start, garbage is collected and
  glibc is asked to return freed memory (``malloc_trim``), so a call is not credited with
  memory a previous call freed. On CUDA, torch's allocator peak is used instead.
* ``Report``: the rows of a benchmark (one dict per method and task), printed as one
  table, then the ratios Atlas / best peer per task and figure; ``--json PATH`` writes the
  same numbers with a note on the machine (load average, torch threads, versions).
* ``warm_up(model)``: one untimed forward and backward, so that no method pays for the
  process's first-call allocations and kernel selection.
* ``arguments(parser)``: the options every script takes (``--threads``, ``--corpus``, ``--json``).

Timings come from one process on a machine that may be shared: the note records the
load average (``os.getloadavg``) before and after, so a busy run can be told apart.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import torch

from atlas import package_versions

__all__ = ["Measured", "Report", "arguments", "measure", "warm_up"]

SHARED_CORPUS = Path("shared") / "corpora" / "domains-v1.jsonl"  # beside the repository, or beside a folder above it
PACKAGES = ("torch", "transformers", "atlas-landscape", "hessian-eigenthings", "curvlinops-for-pytorch",
            "PyHessian", "nnsight", "lm_eval", "scipy")


def shared_corpus() -> str:
    """The shared human-written corpus beside the repository (or beside a folder above it: a worktree),
    else the bundled starter corpus."""
    for folder in Path(__file__).resolve().parents[1:]:
        if (folder / SHARED_CORPUS).is_file():
            return str(folder / SHARED_CORPUS)
    return "starter"


def arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared machine, threads waiting at barriers "
                             "swing timings several-fold)")
    parser.add_argument("--corpus", default=shared_corpus(),
                        help="JSONL corpus (default: the shared corpus beside the repository, else the starter)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the numbers here")
    return parser


def warm_up(model: torch.nn.Module, tokens: int = 64) -> None:
    """One untimed forward and backward on ``tokens`` token ids (0, 1, 2, ...); gradients cleared."""
    ids = torch.arange(tokens, device=next(model.parameters()).device)[None] % model.config.vocab_size
    with torch.enable_grad():
        model(input_ids=ids).logits.float().logsumexp(-1).mean().backward()
    model.zero_grad(set_to_none=True)


def _release_freed_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the baseline may include freed memory
        pass


@dataclass
class Measured:
    value: Any  # what the call returned
    seconds: float
    peak_mb: float  # peak RSS above the call's starting RSS (CPU) or allocator peak (CUDA), MiB


def measure(fn: Callable[[], Any], device: str = "cpu") -> Measured:
    """Run ``fn()`` once: its value, wall time and peak memory (see the module docstring)."""
    _release_freed_memory()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        value = fn()
        torch.cuda.synchronize()
        return Measured(value, time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**20)
    process = psutil.Process()
    base = process.memory_info().rss
    peak, done = [base], threading.Event()

    def sample():
        while not done.wait(0.005):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        value = fn()
    finally:
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    peak[0] = max(peak[0], process.memory_info().rss)
    return Measured(value, seconds, (peak[0] - base) / 2**20)


@dataclass
class Report:
    """Rows of one benchmark; ``show`` prints the table and the ratios, ``write`` the JSON."""

    name: str
    settings: dict
    rows: list[dict] = field(default_factory=list)
    load_before: tuple[float, float, float] = field(default_factory=os.getloadavg)

    def add(self, **row) -> None:
        self.rows.append(row)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def ratios(self, by: Iterable[str], figures: dict[str, str], atlas: str = "atlas",
               not_peers: tuple[str, ...] = ("reference", "on Atlas's products")) -> pd.DataFrame:
        """Per group (``by`` columns; none: the whole table): Atlas's figure / the best peer's, for each figure.

        ``figures``: column -> "min" or "max" (which way is better). The method column is
        ``method``; rows whose method starts with ``atlas`` are Atlas's (the first one counts:
        put the headline setting first), the rest are peers except rows whose method starts or ends
        with one of ``not_peers`` (a reference, a peer's algorithm on Atlas's operator). Rows with a missing figure or
        ``reached`` False are left out of the best-peer choice for that figure."""
        df, by, out = self.table(), list(by), []
        for key, group in (df.groupby(by, sort=False) if by else [((), df)]):
            key = key if isinstance(key, tuple) else (key,)
            mine = group[group["method"].str.startswith(atlas)]
            method = group["method"]
            outside = method.str.startswith(not_peers) | method.str.endswith(not_peers)
            peers = group[~method.str.startswith(atlas) & ~outside]
            if "reached" in peers:
                peers = peers[peers["reached"].fillna(True).astype(bool)]
            if mine.empty or peers.empty:
                continue
            for figure, better in figures.items():
                values = pd.to_numeric(peers[figure], errors="coerce").dropna() if figure in peers else pd.Series()
                own = pd.to_numeric(mine[figure], errors="coerce").iloc[0] if figure in mine else math.nan
                if values.empty or not math.isfinite(own):
                    continue
                best = values.idxmin() if better == "min" else values.idxmax()
                out.append({**dict(zip(by, key)), "figure": figure, "atlas": own, "best_peer": peers.loc[best, "method"],
                            "peer": values[best], "atlas_over_peer": own / values[best] if values[best] else math.inf})
        return pd.DataFrame(out)

    def show(self, ratios: pd.DataFrame | None = None, notes: Iterable[str] = ()) -> None:
        with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 250,
                               "display.float_format", _fmt):
            print(f"\n== {self.name} ==  ({self.machine()['note']})")
            print(self.table().to_string(index=False))
            if ratios is not None and not ratios.empty:
                print("\nAtlas / best peer (below 1: Atlas smaller; for time, HVPs, memory and error smaller is "
                      "better):")
                print(ratios.to_string(index=False))
        for note in notes:
            print(note)

    def machine(self) -> dict:
        after = os.getloadavg()
        note = (f"{platform.node()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average "
                f"{self.load_before[0]:.2f} before / {after[0]:.2f} after")
        return {"note": note, "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                "load_before": self.load_before, "load_after": after, "versions": package_versions(PACKAGES, missing="not installed")}

    def write(self, path: Path | None, ratios: pd.DataFrame | None = None, **extra) -> None:
        if path is None:
            return
        payload = {"benchmark": self.name, "settings": self.settings, "machine": self.machine(),
                   "rows": _records(self.table()), "ratios": _records(ratios) if ratios is not None else [], **extra}
        path.write_text(json.dumps(payload, indent=1, default=_jsonable))
        print(f"wrote {path}")


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _records(df: pd.DataFrame) -> list[dict]:
    return json.loads(df.to_json(orient="records")) if df is not None else []


def _jsonable(x):
    if hasattr(x, "item"):
        return x.item()
    return str(x)
