"""The verdicts file and the flips between two of them.

``atlas verdicts --json`` writes ``{"verdicts": [...]}``, one record per latest verdict (``verdict_json``);
the nightly job keeps each night's file. A verdict is identified by what produced it: the prediction, the
model, the corpus (its content hash, or its name for records without one) and the profile. Two files are
compared on those keys (``compare``): a **flip** is a key whose outcome differs between the old file and
the new one (e.g. supported -> inconclusive), whether or not the criterion's version changed with it (the
flip says so); keys present in one file only are listed as appeared or gone, not as flips. When a file
holds several records of one key (several criterion versions), the newest counts.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import FlipsError
from ._jsonsafe import json_safe

__all__ = ["Comparison", "compare", "corpus_matches", "inconclusive_kind", "load_verdicts", "number", "verdict_cells",
           "verdict_json"]

FIELDS = ("id", "prediction", "version", "form", "model", "corpus", "corpus_hash", "profile", "code_version",
          "outcome", "effect", "ci_low", "ci_high", "n", "criterion", "criterion_hash", "reason", "evidence",
          "created_at")


def verdict_json(v, adjustment=None) -> dict:
    """The JSON record of a stored verdict (``atlas verdicts --json``): NaN as null, times in ISO 8601; with its
    stored Holm adjustment (``atlas._store.Adjustment``), the outcome after it (``adjusted_outcome``: the
    verdict's own outcome where no adjustment applies), the adjusted p-value and the family's size. ``scope``
    and ``n_unit``: what the verdict holds for, and what its n counts."""
    record = json_safe({f: getattr(v, f) for f in FIELDS})
    record.update(scope=v.evidence.get("scope"), n_unit=v.evidence.get("n_unit"),
                  adjusted_outcome=adjustment.outcome if adjustment is not None else v.outcome,
                  p_adjusted=json_safe(adjustment.p_adjusted) if adjustment is not None else None,
                  holm_family=adjustment.family if adjustment is not None else None)
    return record


def number(x) -> str:
    """A figure as the tables print it: 4 significant digits, a dash for none."""
    return "—" if x is None else f"{x:.4g}"


def verdict_cells(record: dict) -> dict[str, str]:
    """A verdict record (``verdict_json``) as the cells of a results table, one text per column: the end of a
    pytest run and ``atlas verdicts`` print the same cells. An inconclusive verdict with no estimate (no effect,
    or no interval: a 2-layer model's rank correlation of two points) says so, apart from one whose interval
    straddles the threshold; the reason is shown for any outcome but supported."""
    criterion = record.get("criterion") or {}
    outcome = record["outcome"].replace("_", " ")
    if record["outcome"] == "inconclusive":
        outcome += f": {inconclusive_kind(record['effect'], record['ci_low'], record['ci_high'])}"
    reason = (record.get("reason") or "").strip().splitlines()
    return {"prediction": record["prediction"], "version": record["version"], "form": record["form"],
            "model": record["model"], "corpus": record["corpus"] or "—", "profile": record["profile"] or "—",
            "outcome": outcome, "after Holm": "—" if record.get("holm_family") is None else
            record["adjusted_outcome"].replace("_", " "), "effect": number(record["effect"]),
            "95% CI": "—" if record["ci_low"] is None and record["ci_high"] is None else
            f"[{number(record['ci_low'])}, {number(record['ci_high'])}]",
            "criterion": f"{criterion['direction']} {number(criterion['threshold'])}" if "direction" in criterion
            else "—",
            "n": "—" if record["n"] is None else f"{record['n']} {record.get('n_unit') or ''}".strip(),
            "scope": record.get("scope") or "—",
            "reason": "" if record["outcome"] == "supported" or not reason else _short(_why(reason[0]), 90)}


def inconclusive_kind(effect, ci_low, ci_high) -> str:
    """Which of the two inconclusive verdicts one is: "no estimate" (no effect or no interval: missing or not
    finite, e.g. a rank correlation of two layers) or "CI straddles" (the interval crosses the threshold)."""
    finite = all(x is not None and math.isfinite(x) for x in (effect, ci_low, ci_high))
    return "CI straddles" if finite else "no estimate"


def _why(reason: str) -> str:
    """A judged verdict's reason without the numbers the table already shows: ``stat = x, 95% CI [..], n = k
    unit: why`` gives ``why``; any other reason (not run, error) stays whole."""
    found = re.fullmatch(r".*, 95% CI \[[^\]]*\], n = [^:]*: (.*)", reason)
    return found.group(1) if found else reason


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def corpus_matches(record: dict, query: str) -> bool:
    """Whether a verdict's corpus is ``query``: its name as stored (``domains-v1[:24/domain]``), the name of
    its file (``domains-v1`` or ``.../domains-v1.jsonl``: every sample of it), or the start of its content
    hash (``sha256:3031...``)."""
    name = record.get("corpus") or ""
    base = name.split("[", 1)[0]
    stem = Path(query).stem if query.endswith(".jsonl") else query
    return query == name or stem == base or (query.startswith("sha256:") and
                                             (record.get("corpus_hash") or "").startswith(query))


def load_verdicts(path: str | Path) -> list[dict]:
    """The verdict records of an ``atlas verdicts --json`` file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FlipsError(f"{path}: no such file (write one with `atlas verdicts --json > {path}`)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FlipsError(f"{path}: not a JSON file ({exc})") from None
    records = data.get("verdicts") if isinstance(data, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise FlipsError(f'{path}: expected {{"verdicts": [...]}} as `atlas verdicts --json` writes it')
    for i, r in enumerate(records):
        missing = [f for f in ("prediction", "model", "outcome") if f not in r]
        if missing:
            raise FlipsError(f"{path}: verdict {i} has no {', '.join(missing)}")
    return records


def _key(r: dict) -> tuple:
    return r["prediction"], r["model"], r.get("corpus_hash") or r.get("corpus") or "", r.get("profile") or ""


def _latest(records: list[dict]) -> dict[tuple, dict]:
    """The newest record of every key (by created_at; in file order where it is missing)."""
    ordered = sorted(enumerate(records), key=lambda ir: (ir[1].get("created_at") or "", ir[0]))
    return {_key(r): r for _, r in ordered}


def _outcome(r: dict) -> str:
    """The outcome that counts: after the session's Holm adjustment where the file has it."""
    return r.get("adjusted_outcome") or r["outcome"]


def _state(r: dict) -> dict:
    return {f: r.get(f) for f in ("outcome", "adjusted_outcome", "version", "effect", "ci_low", "ci_high", "n",
                                  "created_at", "code_version")}


@dataclass
class Comparison:
    """The flips from an old verdicts file to a new one, and the keys only one of them has."""

    flips: list[dict] = field(default_factory=list)
    appeared: list[dict] = field(default_factory=list)
    gone: list[dict] = field(default_factory=list)
    compared: int = 0  # keys in both files

    def as_dict(self) -> dict:
        return {"compared": self.compared, "flips": self.flips, "appeared": self.appeared, "gone": self.gone}


def _about(r: dict) -> dict:
    return {"prediction": r["prediction"], "model": r["model"], "corpus": r.get("corpus") or "",
            "corpus_hash": r.get("corpus_hash") or "", "profile": r.get("profile") or ""}


def compare(old: list[dict], new: list[dict]) -> Comparison:
    """Flips (outcome, after Holm's adjustment where stored, changed for the same prediction, model, corpus and
    profile), in the new file's order."""
    before, after = _latest(old), _latest(new)
    result = Comparison(compared=len(before.keys() & after.keys()))
    for key, r in after.items():
        if key not in before:
            result.appeared.append({**_about(r), "outcome": _outcome(r)})
        elif _outcome(before[key]) != _outcome(r):
            was = before[key]
            result.flips.append({**_about(r), "from": _outcome(was), "to": _outcome(r),
                                 "version_changed": was.get("version") != r.get("version"),
                                 "old": _state(was), "new": _state(r)})
    result.gone = [{**_about(r), "outcome": _outcome(r)} for key, r in before.items() if key not in after]
    return result
