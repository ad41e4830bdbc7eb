"""MkDocs hooks (``mkdocs.yml``: ``hooks``): tables filled from the code at build time, never copied by hand.

A placeholder in a page becomes the table rendered by ``atlas.instrument_table``: ``<!-- instrument-table -->`` the
instruments, from the registry and ``schema/`` (a table without a schema fails the build), and
``<!-- settings-table -->`` the settings of a run, from ``atlas.SETTINGS``
(``atlas.settings_table``); ``<!-- reliability-table -->`` the reliability suite's figures, from the
JSON its last full run wrote (``docs/reliability-figures.json``). Figures that live beside the code
they come from (``benchmarks/scaling.svg``, written by ``benchmarks/scaling.py``) are served from there.
"""

import json
from pathlib import Path

from mkdocs.structure.files import File

from atlas import INSTRUMENTS, SETTINGS, instrument_table, schema_for, settings_table

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("benchmarks/scaling.svg",)

#: the reliability suite's figures as its last full run wrote them (``reports/reliability-figures.json``, copied)
RELIABILITY = ROOT / "docs" / "reliability-figures.json"


def reliability_table() -> str:
    """The figures of the reliability suite's last full run, as the run summed them."""
    run = json.loads(RELIABILITY.read_text(encoding="utf-8"))
    tests = ", ".join(f"{count} {kind}" for kind, count in run["tests"].items() if count)
    rows = ["| what | figure |", "|---|---|"]
    rows += [f"| {figure} | {value} |" for figure, value in run["figures"].items()]
    return f"From the last run of the reliability suite ({tests}):\n\n" + "\n".join(rows) + "\n"


TABLES = {"<!-- instrument-table -->": lambda: instrument_table(INSTRUMENTS, schema_for),
          "<!-- settings-table -->": lambda: settings_table(SETTINGS),
          "<!-- reliability-table -->": reliability_table}


def on_page_markdown(markdown: str, **_) -> str:
    for placeholder, render in TABLES.items():
        if placeholder in markdown:
            markdown = markdown.replace(placeholder, render())
    return markdown


def on_files(files, config, **_):
    for figure in FIGURES:
        files.append(File.generated(config, figure, abs_src_path=str(ROOT / figure)))
    return files
