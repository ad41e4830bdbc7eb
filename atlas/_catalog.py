"""What the command line needs to know of the instruments, read from their source without importing them.

``atlas measure NAME --help`` must answer at once, and importing an instrument imports torch
and transformers (seconds). The entry functions already say everything the CLI shows: the
``@instrument(...)`` decorator names the instrument and its pairwise model settings, the
keyword-only parameters are the settings with their defaults, a ``Literal[...]``
annotation is a setting's set of values, and the docstring's first line and its
``Settings:`` section (``name: what it does``) are the help. This module reads exactly that
from each ``atlas/instruments/*.py`` with ``ast`` (it lives outside that package, whose
``__init__`` imports them all); ``tests/test_cli.py`` checks that it agrees with the
registry the modules build when imported.

``instrument_table`` is the other direction: the registry itself and each table's schema, rendered as the
Markdown table the documentation shows (``docs/hooks.py`` fills ``docs/instruments.md`` with it at build
time); ``settings_table`` renders the run's settings (``atlas._options``) the same way. Both are given what
they render: this module sits below the registry, the schema and the options.
"""

from __future__ import annotations

import ast
import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import BadInput
from ._public import public

__all__ = ["NOT_SETTINGS", "RECIPES", "CatalogEntry", "Setting", "catalog", "instrument_table", "recipe_file",
           "recipe_names", "settings_help", "settings_table"]

#: an entry function's keyword parameters that are not settings: what CISP passes in (the progress switch, and
#: the Lab resolver of an instrument that trains)
NOT_SETTINGS = ("lm", "corpus", "progress", "lab")

_HERE = Path(__file__).parent / "instruments"

#: the Lab's bundled recipes (``atlas.lab``), listed here so that ``atlas train --help`` needs no torch
RECIPES = Path(__file__).parent / "lab" / "recipes"


@dataclass(frozen=True)
class Setting:
    name: str
    default: object
    choices: tuple | None = None  # from a Literal[...] annotation
    help: str = ""
    model: bool = False  # names another model (a pairwise instrument)


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    module: str  # atlas.instruments.<module>
    summary: str
    settings: tuple[Setting, ...] = field(default_factory=tuple)


def settings_help(doc: str | None) -> dict[str, str]:
    """The ``Settings:`` section of a docstring: ``name: text`` lines (continued by deeper-indented lines)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    if "Settings:" not in [line.strip() for line in lines]:
        return {}
    out, current, indent = {}, None, None
    for line in lines[[line.strip() for line in lines].index("Settings:") + 1:]:
        if not line.strip():
            if out:
                break
            continue
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        if depth < indent:
            break
        name, sep, text = line.strip().partition(":")
        if depth == indent and sep and name.isidentifier():
            current = name
            out[name] = text.strip()
        elif current is not None:
            out[current] += " " + line.strip()
    return out


def _choices(annotation: ast.expr | None) -> tuple | None:
    if isinstance(annotation, ast.Subscript) and getattr(annotation.value, "id", None) == "Literal":
        inner = annotation.slice
        items = inner.elts if isinstance(inner, ast.Tuple) else [inner]
        return tuple(ast.literal_eval(item) for item in items)
    return None


def _entry(module: str, fn: ast.FunctionDef) -> CatalogEntry | None:
    call = next((d for d in fn.decorator_list
                 if isinstance(d, ast.Call) and getattr(d.func, "id", None) == "instrument"), None)
    if call is None:
        return None
    options = {k.arg: k.value for k in call.keywords}
    models = ast.literal_eval(options["models"]) if "models" in options else ()
    doc = ast.get_docstring(fn) or ""
    helps = settings_help(doc)
    settings = tuple(
        Setting(arg.arg, ast.literal_eval(default), _choices(arg.annotation), helps.get(arg.arg, ""),
                arg.arg in models)
        for arg, default in zip(fn.args.kwonlyargs, fn.args.kw_defaults) if arg.arg not in NOT_SETTINGS)
    return CatalogEntry(ast.literal_eval(call.args[0]), f"atlas.instruments.{module}",
                        doc.strip().splitlines()[0] if doc.strip() else "", settings)


def registration(init: ast.Module) -> ast.ImportFrom:
    """The registration line of ``atlas/instruments/__init__.py``: its first ``from . import ...``."""
    return next(n for n in init.body if isinstance(n, ast.ImportFrom) and n.level == 1 and not n.module)


@functools.cache
def catalog() -> dict[str, CatalogEntry]:
    """Every instrument, by name, in the order the package registers them (its ``__init__`` imports)."""
    found = {}
    for alias in registration(ast.parse((_HERE / "__init__.py").read_text(encoding="utf-8"))).names:
        tree = ast.parse((_HERE / f"{alias.name}.py").read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and (entry := _entry(alias.name, node)):
                found[entry.name] = entry
    return found


def recipe_names() -> list[str]:
    """The bundled Lab recipes (``atlas/lab/recipes/*.yaml``), by name."""
    return sorted(p.name.removesuffix(".yaml") for p in RECIPES.iterdir() if p.name.endswith(".yaml"))


def recipe_file(name: str) -> Path:
    """The file of the bundled recipe ``name`` (one of ``recipe_names()``)."""
    return RECIPES / f"{name}.yaml"


def instrument_table(instruments: Mapping, schema_for: Callable) -> str:
    """Every registered instrument as one Markdown table: name and version, its tables with their schema
    columns (summaries marked), the Framework terms it measures, and its settings with their defaults.

    ``instruments`` is the registry (``atlas.instruments.INSTRUMENTS``) and ``schema_for`` reads a table's schema
    (``atlas._schema.schema_for``): the caller passes them in (the documentation's hook), as this module sits
    below both. Nothing is restated: a table without a schema raises ``BadInput``, and so does a schema that
    names another instrument (the documentation build fails).
    """

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = ["| instrument | tables (schema columns) | Framework terms | settings (defaults) |", "|---|---|---|---|"]
    for name, entry in instruments.items():
        tables = []
        for table in entry.tables:
            schema = schema_for(table)
            if schema.instrument != name:
                raise BadInput(f"schema/{table}.yaml names instrument {schema.instrument!r}, not {name!r}, "
                               f"which registers the table")
            kind = " (summary)" if table in entry.summaries else ""
            tables.append(f"`{table}`{kind}: {', '.join(schema.columns)}")
        settings = [f"`{k}={v!r}`" + (f" ({' or '.join(map(str, entry.choices[k]))})" if k in entry.choices else "")
                    for k, v in entry.defaults.items()]
        rows.append(f"| `{name}` v{entry.version}<br>{cell(entry.summary)} | {cell('<br>'.join(tables))} | "
                    f"{', '.join(entry.terms) or '—'} | {cell(', '.join(settings)) or '—'} |")
    return "\n".join(rows) + "\n"


def settings_table(settings: Mapping) -> str:
    """The settings of a run (``atlas._options.SETTINGS``, passed in) as one Markdown table: the pytest option,
    its environment variable, default, values and help, for the documentation (``docs/hooks.py``)."""
    rows = ["| pytest option | environment | default | values | |", "|---|---|---|---|---|"]
    for s in settings.values():
        values = ", ".join(f"`{c}`" for c in s.choices) if s.choices else f"`{s.metavar or 'TEXT'}`"
        rows.append(f"| `--atlas-{s.name}` | `{s.env}` | {f'`{s.default}`' if s.default else '—'} | {values} | "
                    f"{s.help.replace('|', chr(92) + '|')} |")
    return "\n".join(rows) + "\n"


public("atlas", instrument_table, settings_table)
