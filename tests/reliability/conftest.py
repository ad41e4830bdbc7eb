"""Fixtures of the reliability suite (helpers: ``_support.py``). Every module here marks its tests
``reliability`` (``pytestmark``), so ``pytest -m reliability tests/`` runs the suite alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """Eight domains, two short passages each: a whole tiny-gpt2 run takes a moment."""
    path = tmp_path_factory.mktemp("corpus") / "tiny.jsonl"
    words = "the river keeps its own counsel under a sky of slate and the town listens".split()
    with path.open("w", encoding="utf-8") as f:
        for d in range(8):
            for i in range(2):
                body = " ".join(words[(d + i + k) % len(words)] for k in range(24))
                f.write(json.dumps({"id": f"d{d}-{i}", "domain": f"domain_{d}", "text": body}) + "\n")
    return path


