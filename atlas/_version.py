"""What a prediction's version covers: its criterion and the analysis that turns evidence into a verdict.

A pre-registration holds only if changing how the effect is computed makes a new
version, as changing the threshold does. The version of a prediction is the first
12 hex digits of a SHA-256 over:

* the criterion (statistic, direction, threshold, CI method, sample);
* the **analysis**: the source of the test function and of every function, class and
  constant it reaches by name, followed transitively, that is defined in the
  prediction's own module or in the ``atlas`` package (``bootstrap_ci``, the evidence
  helpers, ``Criterion.judge`` ...). Sources are compared as normalised syntax trees
  (``ast.unparse`` with docstrings removed): comments, docstrings, blank lines and
  formatting never change a version; a changed expression always does. Constants
  count by value (numbers, strings, and containers of them; other objects by type);
  modules and third-party objects (numpy, scipy, pytest) do not count, their
  versions are in every run's provenance;
* the instruments it declares (``needs=``): each one's version and the settings the
  prediction asks of it.

The instruments' own code is versioned by their declared ``version`` (CISP never
reuses a run of another version), and every verdict also stores the git commit of
the code that produced it (``code_version``), "+uncommitted changes" when the
working tree differs from it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import subprocess
import textwrap
import types
from pathlib import Path

__all__ = ["analysis_sources", "code_version", "prediction_version"]

_SIMPLE = (int, float, str, bool, type(None))


def _tree(obj, root: bool) -> ast.Module:
    """The syntax tree of a function or class with its docstrings removed; the root test function also without
    its decorators (the marker's declarations -- criterion, needs -- are counted on their own)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    if root and isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        tree.body[0].decorator_list = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


def _names(tree: ast.Module) -> set[str]:
    """The names a tree reads."""
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _value(value):
    """A constant as data: numbers and strings, containers of them; anything else by its type's name."""
    if isinstance(value, _SIMPLE):
        return value
    if isinstance(value, (tuple, list, frozenset, set)):
        items = [_value(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, dict):
        return {str(k): _value(v) for k, v in value.items()}
    if hasattr(value, "as_dict"):  # a Criterion
        return value.as_dict()
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _ours(obj, home: str) -> bool:
    module = getattr(obj, "__module__", "") or ""
    return module == home or module == "atlas" or module.startswith("atlas.")


def _attributes(tree: ast.Module, bound: dict[str, type]) -> list:
    """Methods read as attributes of a bound parameter, e.g. ``prediction.bootstrap`` -> Prediction.bootstrap."""
    found = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in bound:
            member = getattr(bound[n.value.id], n.attr, None)
            member = getattr(member, "fget", member)  # a property reads through its getter
            if isinstance(member, types.FunctionType):
                found.append(member)
    return found


def _label(module: str, home: str) -> str:
    """A module as the version names it: the prediction's own module by role, not by the name it was imported
    under (pytest's rootdir-relative name, or ``atlas calibrate``'s), so that both give one version."""
    return "<prediction module>" if module == home else module


def analysis_sources(fn, bound: dict[str, type] | None = None, extra: tuple = ()) -> dict[str, object]:
    """Qualified name -> normalised source (or value) of ``fn`` and everything it reaches (see the module doc).

    ``bound``: parameters of known type whose methods the analysis calls (``{"prediction": Prediction}``);
    ``extra``: functions or classes counted whether or not they are named (the criterion's class: its
    decision rule)."""
    home, bound = fn.__module__, bound or {}
    found: dict[str, object] = {}
    todo = [*extra, fn]
    while todo:
        obj = todo.pop()
        name = f"{_label(obj.__module__, home)}.{obj.__qualname__}"
        if name in found:
            continue
        tree = _tree(obj, root=obj is fn)
        found[name] = ast.unparse(tree)
        scope = getattr(obj, "__globals__", None) or vars(inspect.getmodule(obj))
        todo += _attributes(tree, bound)
        for ref in sorted(_names(tree)):
            if ref not in scope:
                continue
            value = scope[ref]
            if isinstance(value, types.ModuleType):
                continue
            if isinstance(value, (types.FunctionType, type)) and _ours(value, home):
                todo.append(inspect.unwrap(value))
            elif not callable(value) or hasattr(value, "as_dict"):
                found[f"{_label(obj.__module__, home)}.{ref}"] = _value(value)
    return dict(sorted(found.items()))


def prediction_version(fn, criterion, needs: dict[str, dict], instrument_versions: dict[str, str],
                       bound: dict[str, type] | None = None) -> str:
    """The 12-hex-digit version of a prediction (see the module doc)."""
    payload = {"criterion": criterion.as_dict(), "analysis": analysis_sources(fn, bound, (type(criterion),)),
               "needs": {name: {"version": instrument_versions[name], "settings": _value(settings)}
                         for name, settings in needs.items()}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


@functools.cache
def code_version(path: str) -> str:
    """The git commit of the repository holding ``path``, with "+uncommitted changes" when its tracked files (or
    ``path`` itself) differ from it; "unversioned" outside a git checkout."""
    where = Path(path).resolve()
    folder = where if where.is_dir() else where.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return "unversioned"
    dirty = git("status", "--porcelain", "--untracked-files=no") or git("ls-files", "--others", "--", str(where))
    return commit + ("+uncommitted changes" if dirty else "")
