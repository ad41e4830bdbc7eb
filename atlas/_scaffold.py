"""``atlas new``: a first prediction or instrument, written from templates that run as they are.

    atlas new prediction my_claim       # predictions/test_my_claim.py and tests/test_my_claim_outcomes.py
    pytest predictions/test_my_claim.py --atlas-model tiny-gpt2      # a verdict, stored in ./atlas.db
    pytest tests/test_my_claim_outcomes.py                         # it can come out either way
    atlas calibrate my_claim                                       # its false "supported" rate under its null

    atlas new instrument my_probe       # in a checkout of Atlas (pip install -e .)
    atlas measure my_probe --model tiny-gpt2 --per-domain 2
    pytest tests/test_my_probe.py

A prediction module is a pre-registration -- claim, criterion with its unit and scope, the evidence it reads,
the null ``atlas calibrate`` judges -- through the public API only (``atlas``, ``atlas.evidence``,
``atlas.stats``, ``atlas.simulate``). Its outcome tests live in ``tests/``, not beside it: every test among the
predictions must be a prediction (``atlas.plugin``), and two modules of one name collide in pytest.

An instrument is registered explicitly, the way every instrument is: ``atlas new instrument`` appends its
module's name to the registration line of ``atlas/instruments/__init__.py`` (``from . import perplexity, ...``),
which importing the package runs -- each module's ``@instrument(...)`` adds itself to the registry, in that
order -- and which ``atlas measure`` reads without importing (``atlas._catalog``). That one line is the whole
registration: it shows in ``git diff``, and deleting the name unregisters the instrument. Nothing scans folders.

The templates are Jinja2 files in ``atlas/templates/new/``. A NAME that is not a lower-case identifier, or a
file (or instrument) that exists already, is refused (``BadInput``: one line, exit 2) before anything is written.
"""

from __future__ import annotations

import ast
import keyword
import re
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from ._catalog import catalog, registration
from ._errors import BadInput

__all__ = ["new_instrument", "new_prediction"]

_PACKAGE = Path(__file__).resolve().parent


def new_prediction(name: str, folder: Path | str = ".") -> list[Path]:
    """Write ``predictions/test_NAME.py`` and ``tests/test_NAME_outcomes.py`` under ``folder``; the paths."""
    folder = Path(folder)
    _check_name(name)
    return _write({folder / "predictions" / f"test_{name}.py": "prediction.py.j2",
                   folder / "tests" / f"test_{name}_outcomes.py": "prediction_outcomes.py.j2"}, name)


def new_instrument(name: str) -> list[Path]:
    """Write ``atlas/instruments/NAME.py``, ``schema/NAME.yaml`` and ``tests/test_NAME.py`` in the checkout this
    ``atlas`` is imported from, and register the module (see the module docstring); the paths written."""
    _check_name(name)
    root = _PACKAGE.parent
    if not ((root / "pyproject.toml").is_file() and (root / "tests").is_dir() and (root / "schema").is_dir()):
        raise BadInput(f"atlas new instrument writes into a checkout of Atlas, and this atlas is installed at "
                       f"{_PACKAGE}: clone the repository and pip install -e . there")
    if name in catalog():
        raise BadInput(f"an instrument named {name!r} exists already ({catalog()[name].module}); choose another NAME")
    init = _PACKAGE / "instruments" / "__init__.py"
    registered = _registered(init.read_text(encoding="utf-8"), name)
    written = _write({_PACKAGE / "instruments" / f"{name}.py": "instrument.py.j2",
                      root / "schema" / f"{name}.yaml": "instrument.yaml.j2",
                      root / "tests" / f"test_{name}.py": "instrument_test.py.j2"}, name)
    init.write_text(registered, encoding="utf-8")
    catalog.cache_clear()
    return [*written, init]


def _check_name(name: str) -> None:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise BadInput(f"NAME must be a lower-case Python identifier (letters, digits and _, a letter first; not a "
                       f"keyword), not {name!r}")


def _registered(source: str, name: str) -> str:
    """``atlas/instruments/__init__.py`` with ``name`` appended to its registration line."""
    last = registration(ast.parse(source)).names[-1]  # the position after the last module's name
    lines = source.splitlines(keepends=True)
    line = lines[last.end_lineno - 1]
    lines[last.end_lineno - 1] = f"{line[:last.end_col_offset]}, {name}{line[last.end_col_offset:]}"
    return "".join(lines)


def _write(files: dict[Path, str], name: str) -> list[Path]:
    """Render each template with ``name`` into its path; nothing is written when any path exists."""
    existing = [str(path) for path in files if path.exists()]
    if existing:
        raise BadInput(f"{', '.join(existing)} {'exists' if len(existing) == 1 else 'exist'} already; choose "
                       "another NAME")
    env = Environment(loader=PackageLoader("atlas", "templates/new"), keep_trailing_newline=True,
                      undefined=StrictUndefined)
    for path, template in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(env.get_template(template).render(name=name), encoding="utf-8")
    return list(files)
