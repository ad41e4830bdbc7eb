"""What a prediction's version covers: its criterion and the analysis that turns evidence into a verdict.

A pre-registration holds only if changing how the effect is computed makes a new
version, as changing the threshold does. The version of a prediction is the first
12 hex digits of a SHA-256 over:

* the criterion (statistic, direction, threshold, CI method, sample);
* the **analysis**: the test function and every function, class and constant it
  reaches, followed transitively -- by a name in its module, as an attribute of one of
  our modules (``_stats.bootstrap_ci``, ``atlas.stats.t_interval``), as a method of the
  ``prediction`` it is given -- that is *ours*: defined in the ``atlas`` package
  (``bootstrap_ci``, the evidence helpers, ``Criterion.judge`` ...) or in the project's
  own code (the prediction's module and any helper module it imports). Modules and
  what is installed as a package or ships with Python (numpy, scipy, pytest) do not
  count: their versions are in every run's provenance;
* the instruments it declares (``needs=``): each one's version and the settings the
  prediction asks of it.

The analysis is its **content** and nothing else: the sorted list of its parts, each
function or class as its normalised syntax tree (``ast.unparse`` with docstrings
removed; the test function also without its decorators, the marker's declarations
counting on their own), each constant as ``NAME = value`` under the name the code
reading it uses, by value (numbers, strings, and containers of them; a criterion by
its fields; other objects by type) -- but a constant holding functions of ours (a
table of lambdas such as the criterion's ``_SIDES``) by the normalised source of the
statement that defines it, followed like a function's. So

* comments, docstrings, blank lines and formatting never change a version; a changed
  expression in any part always does, and so does a part added or dropped;
* where a part is defined never enters: moving a helper to another module unchanged
  keeps every version, and so does a public facade (``atlas.stats``) re-exporting a
  private function or class under a public ``__module__``. A facade that wraps the
  private function adds the wrapper as one more part, and the analysis follows it to
  the function it calls;
* a name is content: renaming a helper makes a new version (its ``def`` line and the
  call that reads it both change), as renaming a constant does.

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
import linecache
import os
import site
import sys
import sysconfig
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path

from ._provenance import git

__all__ = ["analysis_sources", "code_version", "prediction_version"]

_SIMPLE = (int, float, str, bool, type(None))

#: where what is installed or ships with Python lives: code there is not ours
_INSTALLED = tuple(sorted({os.path.join(os.path.realpath(p), "") for p in (
    *(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")),
    *site.getsitepackages(), site.getusersitepackages())}))


def _ours(obj) -> bool:
    """Whether a function, class or module is ours: named in the ``atlas`` package (under its private name or
    the public one a facade gives it), or defined in a file of the project rather than an installed one."""
    name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None) or ""
    if name == "atlas" or name.startswith("atlas."):
        return True
    file = obj.__code__.co_filename if isinstance(obj, types.FunctionType) else \
        getattr(sys.modules.get(name), "__file__", None)
    return bool(file) and os.path.isabs(file) and not os.path.realpath(file).startswith(_INSTALLED)


@functools.lru_cache(maxsize=64)
def _parse(source: str) -> ast.Module:
    """A module's syntax tree, parsed once per source text."""
    return ast.parse(source)


def _lines(source: str, node: ast.stmt) -> str:
    """The source of a statement, decorators included."""
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", ()))])
    return "".join(source.splitlines(keepends=True)[first - 1:node.end_lineno])


@functools.lru_cache(maxsize=64)
def _classes(source: str) -> dict[str, str]:
    """The classes a module's source defines: qualified name -> the source of its definition (the first of
    each name)."""
    found: dict[str, str] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                if isinstance(child, ast.ClassDef):
                    found.setdefault(name, _lines(source, child))
                visit(child, name + ("." if isinstance(child, ast.ClassDef) else ".<locals>."))
            elif not isinstance(child, ast.expr):  # no class is defined in an expression
                visit(child, prefix)

    visit(_parse(source), "")
    return found


def _holders(cls: type) -> Iterator[types.ModuleType | None]:
    """The module a class names, then the modules that hold it, in name order (scanned only when asked)."""
    yield sys.modules.get(cls.__module__)
    for _, module in sorted(sys.modules.items()):
        if getattr(module, "__dict__", {}).get(cls.__name__) is cls:
            yield module


def _class_origin(cls: type) -> tuple[str, dict]:
    """The source of a class and the namespace of the module defining it, whatever its ``__module__`` says: a
    public facade may name it (``atlas.Criterion``, defined in ``atlas._verdict``). The named module first,
    then the modules that hold the class, in name order."""
    for module in _holders(cls):
        try:
            source = _classes(inspect.getsource(module)).get(cls.__qualname__)
        except (OSError, TypeError):  # no module, or no source
            continue
        if source is not None:
            return source, vars(module)
    raise OSError(f"could not find the definition of class {cls.__module__}.{cls.__qualname__}")


def _held(value) -> list[types.FunctionType]:
    """The functions of ours a constant holds, in containers of any depth (``_SIDES = {">": (lambda ...)}``)."""
    if isinstance(value, types.FunctionType):
        return [value] if _ours(value) else []
    if isinstance(value, dict):
        value = [*value, *value.values()]
    if isinstance(value, (tuple, list, frozenset, set)):
        return [f for v in value for f in _held(v)]
    return []


def _constant_origin(value) -> tuple[str, dict]:
    """The source of the module-level statement assigning a constant that holds functions, in the module that
    defines them, and that module's namespace: such a constant counts by its source, as a function does."""
    first = _held(value)[0]
    scope, file = first.__globals__, first.__code__.co_filename
    names = {name for name, bound in scope.items() if bound is value}
    linecache.checkcache(file)
    source = "".join(linecache.getlines(file))
    for statement in _parse(source).body:
        targets = statement.targets if isinstance(statement, ast.Assign) else [getattr(statement, "target", None)]
        if any(isinstance(t, ast.Name) and t.id in names for t in targets):
            return _lines(source, statement), scope
    raise OSError(f"could not find the statement defining {', '.join(sorted(names)) or 'a constant'} in {file}")


def _tree(obj, root: bool) -> tuple[ast.Module, dict]:
    """The syntax tree of a function, a class or a constant holding functions, with its docstrings removed (the
    root test function also without its decorators: the marker's declarations -- criterion, needs -- are
    counted on their own), and the namespace its names are read in."""
    if isinstance(obj, types.FunctionType):
        source, scope = inspect.getsource(obj), obj.__globals__
    elif isinstance(obj, type):
        source, scope = _class_origin(obj)
    else:
        source, scope = _constant_origin(obj)
    tree = ast.parse(textwrap.dedent(source))
    if root and isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        tree.body[0].decorator_list = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return tree, scope


def _owner(node: ast.expr, scope: dict, bound: dict[str, type]):
    """What an attribute is read from: the type of a bound parameter, or an object of the scope (through
    attributes of modules: ``atlas.stats`` in ``atlas.stats.t_interval``); None when neither."""
    if isinstance(node, ast.Name):
        return bound[node.id] if node.id in bound else scope.get(node.id)
    if isinstance(node, ast.Attribute):
        outer = _owner(node.value, scope, bound)
        return getattr(outer, node.attr, None) if isinstance(outer, types.ModuleType) else None
    return None


def _reads(tree: ast.Module, scope: dict, bound: dict[str, type]) -> Iterator[tuple[str, object]]:
    """(name, object) for what a tree reads: each name of its scope, each attribute of one of our modules
    (``_stats.bootstrap_ci``), each method of a bound parameter (``prediction.bootstrap``, a property through
    its getter)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in scope:
            yield node.id, scope[node.id]
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            owner = _owner(node.value, scope, bound)
            if isinstance(node.value, ast.Name) and node.value.id in bound:
                member = getattr(owner, node.attr, None)
                member = getattr(member, "fget", member)
                if isinstance(member, types.FunctionType):
                    yield node.attr, member
            elif isinstance(owner, types.ModuleType) and _ours(owner) and hasattr(owner, node.attr):
                yield node.attr, getattr(owner, node.attr)


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
    return f"<{type(value).__qualname__}>"


def analysis_sources(fn, bound: dict[str, type] | None = None, extra: tuple = ()) -> list[str]:
    """The analysis of ``fn``: the sorted normalised sources of ``fn`` and of every function and class it
    reaches, and ``NAME = value`` for every constant (see the module doc).

    ``bound``: parameters of known type whose methods the analysis calls (``{"prediction": Prediction}``);
    ``extra``: functions or classes counted whether or not they are named (the criterion's class: its
    decision rule)."""
    bound = bound or {}
    parts: set[str] = set()
    seen: set[int] = set()
    todo = [*extra, fn]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        tree, scope = _tree(obj, root=obj is fn)
        parts.add(ast.unparse(tree))
        for name, value in _reads(tree, scope, bound):
            if isinstance(value, types.ModuleType):
                continue
            if isinstance(value, (types.FunctionType, type)):
                if _ours(value):
                    todo.append(inspect.unwrap(value))
            elif _held(value):
                todo.append(value)
            elif not callable(value) or hasattr(value, "as_dict"):
                parts.add(f"{name} = {json.dumps(_value(value), sort_keys=True, default=str)}")
    return sorted(parts)


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

    commit = git("rev-parse", "HEAD", cwd=folder)
    if not commit:
        return "unversioned"
    dirty = git("status", "--porcelain", "--untracked-files=no", cwd=folder) or \
        git("ls-files", "--others", "--", str(where), cwd=folder)
    return commit + ("+uncommitted changes" if dirty else "")
