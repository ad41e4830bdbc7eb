"""What an instrument setting may be, declared once in the entry function's signature, and the one check of it.

An entry function's keyword-only parameters are its settings (``atlas.instruments``). Their annotations say
what each takes, and nothing else does: CISP checks every value against them before it resolves a run
(``atlas._cisp.resolve``), the ``atlas measure`` command before it loads the model, and the registry's wrapper
of the entry function whenever it is called, so a bad value is one ``SettingsError`` naming the setting,
before anything is measured or stored::

    def measure_stiffness(lm, corpus, *, radii: Annotated[str, RADII] = "0.05,0.1,0.2",
                          steps: Annotated[int, at_least(1)] = 3, lr: Annotated[float, above(0)] = 0.004):

* ``int``: a whole number (never a bool) of at most 63 bits (what torch and the store hold), within its bounds;
* ``float``: a finite real number, always (NaN and ±inf are refused), within its bounds;
* ``bool``: True or False; ``Literal[...]``: one of its values;
* ``Annotated[str, comma_list(...)]``: a comma list whose items are of its kind, within its bounds or among
  its choices (its ``words``, such as "all", are taken whole); the entry function reads the value with the
  same declaration (``RADII.parse(radii)``), so the rule is written once;
* ``Annotated[T, at_least(n)]`` (``above``, ``below``): a number's bounds;
* any other annotation (a pairwise instrument's other model) is checked where it is used.

A bound that depends on the model or the corpus (a layer number past the model's last layer, a domain the
corpus lacks) stays in the entry function, which raises a ``SettingsError`` before it measures.
"""

from __future__ import annotations

import inspect
import math
import numbers
import operator
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ._errors import SettingsError

__all__ = ["Bound", "Declared", "ItemList", "above", "at_least", "below", "check_settings", "comma_list",
           "declared_settings"]

#: the largest whole number a setting may be (exclusive): a torch and SQLite integer
INT_LIMIT = 2 ** 63

_OPS = {">=": operator.ge, ">": operator.gt, "<": operator.lt}


@dataclass(frozen=True)
class Bound:
    """A number's bound: ``value OP limit``."""

    op: str
    limit: float

    def holds(self, value) -> bool:
        return _OPS[self.op](value, self.limit)

    def __str__(self) -> str:
        limit = int(self.limit) if float(self.limit).is_integer() else self.limit
        return {">=": "at least", ">": "above", "<": "below"}[self.op] + f" {limit}"


def at_least(limit: float) -> Bound:
    return Bound(">=", limit)


def above(limit: float) -> Bound:
    return Bound(">", limit)


def below(limit: float) -> Bound:
    return Bound("<", limit)


def _kind(kind: type) -> str:
    return {int: "a whole number", float: "a finite number", bool: "True or False", str: "text"}[kind]


def _number(kind: type, value, bounds: tuple[Bound, ...]) -> str | None:
    """Why ``value`` is not a ``kind`` (int or float) within ``bounds``; None when it is."""
    within = " and ".join(map(str, bounds))
    wants = f"{_kind(kind)} {within}".strip()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if kind is int else numbers.Real):
        return wants
    if kind is int and not -INT_LIMIT < value < INT_LIMIT:
        return f"{wants} (at most 63 bits)"
    if kind is float and not math.isfinite(value):
        return wants
    return within if any(not b.holds(value) for b in bounds) else None


@dataclass(frozen=True)
class ItemList:
    """A setting given as a comma list (text): each item of ``kind`` (int, float or str), within ``bounds``
    or among ``choices``; ``words`` are values taken whole (``"all"``)."""

    kind: type
    bounds: tuple[Bound, ...] = ()
    choices: tuple[str, ...] = ()
    words: tuple[str, ...] = ()

    @property
    def wants(self) -> str:
        item = {int: "whole numbers", float: "finite numbers", str: "names"}[self.kind]
        if self.choices:
            item = "names among " + ", ".join(self.choices)
        if self.bounds:
            item += " " + " and ".join(map(str, self.bounds))
        whole = " or ".join(repr(w) for w in self.words)
        return (f"{whole} or " if whole else "") + f"a comma list of {item}"

    def parse(self, text: str, name: str = "the value") -> list | str:
        """The items of ``text`` (or ``text`` itself, one of ``words``); ``SettingsError`` naming ``name``."""
        if not isinstance(text, str):
            raise SettingsError(f"{name} must be {self.wants} (text), not {text!r}")
        if text in self.words:
            return text
        items = [item.strip() for item in text.split(",")]
        try:
            values = [self._item(item) for item in items]
        except (ValueError, OverflowError):
            values = None
        if values is None or not all(items) or any(
                self.kind is not str and _number(self.kind, v, self.bounds) for v in values) or (
                self.choices and set(values) - set(self.choices)):
            raise SettingsError(f"{name} must be {self.wants}, not {text!r}")
        return values

    def _item(self, item: str):
        if self.kind is int:
            return int(item, 10)
        if self.kind is float:
            return float(item)
        return item


def comma_list(kind: type, *bounds: Bound, choices: tuple[str, ...] = (), words: tuple[str, ...] = ()) -> ItemList:
    return ItemList(kind, tuple(bounds), tuple(choices), tuple(words))


@dataclass(frozen=True)
class Declared:
    """One setting as its entry function declares it: its kind (None: not checked here), default, choices (from
    ``Literal``), bounds and comma-list form (from ``Annotated``)."""

    name: str
    default: object
    kind: type | None = None
    choices: tuple | None = None
    bounds: tuple[Bound, ...] = ()
    items: ItemList | None = None

    @property
    def flag(self) -> str:
        """The setting's option of ``atlas measure``."""
        return "--" + self.name.replace("_", "-")

    def problem(self, value) -> str | None:
        """What ``value`` must be, when it is not that; None when the setting takes it."""
        if self.choices is not None:
            return None if value in self.choices else "one of " + ", ".join(map(repr, self.choices))
        if self.items is not None:
            try:
                self.items.parse(value)
            except SettingsError:
                return self.items.wants
            return None
        if self.kind in (int, float):
            return _number(self.kind, value, self.bounds)
        if self.kind is bool:
            return None if isinstance(value, bool) else _kind(bool)
        if self.kind is str:
            return None if isinstance(value, str) else _kind(str)
        return None

    def check(self, value, owner: str = "") -> None:
        """``SettingsError`` (one line: the owner, the setting and its option, what it must be, the value) when
        the setting does not take ``value``."""
        wants = self.problem(value)
        if wants is None:
            return
        prefix = f"{owner}: " if owner else ""
        if self.choices is not None:  # the settings table's message (atlas._options) for a value outside a set
            *others, last = map(str, self.choices)
            raise SettingsError(f"{prefix}unknown {self.name} {value!r}: use {', '.join(others)} or {last} "
                                f"(option {self.flag})")
        raise SettingsError(f"{prefix}{self.name} must be {wants}, not {value!r} (option {self.flag})")

    @classmethod
    def of(cls, name: str, annotation, default) -> Declared:
        base, extras = annotation, ()
        if typing.get_origin(annotation) is typing.Annotated:
            base, *extras = typing.get_args(annotation)
        bounds = tuple(e for e in extras if isinstance(e, Bound))
        items = next((e for e in extras if isinstance(e, ItemList)), None)
        if typing.get_origin(base) is typing.Literal:
            return cls(name, default, choices=typing.get_args(base))
        kind = base if base in (int, float, bool, str) else None
        return cls(name, default, kind, bounds=bounds, items=items)


def declared_settings(fn: Callable, skip: tuple[str, ...] = ()) -> dict[str, Declared]:
    """The settings of ``fn`` (its keyword-only parameters but ``skip``), read from its signature; a default the
    declaration refuses is a ``ValueError`` (a mistake in the code, found when the module is imported)."""
    hints = typing.get_type_hints(fn, include_extras=True)
    found = {p.name: Declared.of(p.name, hints.get(p.name), p.default)
             for p in inspect.signature(fn).parameters.values()
             if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in skip}
    for setting in found.values():
        if setting.default is not None and setting.problem(setting.default):
            raise ValueError(f"{fn.__qualname__}: the default of {setting.name} is {setting.default!r}, which its "
                             f"declaration refuses ({setting.problem(setting.default)})")
    return found


def check_settings(declared: Mapping[str, Declared], values: Mapping, owner: str) -> None:
    """Check each of ``values`` that ``declared`` names (``SettingsError`` for the first it refuses)."""
    for name, value in values.items():
        if name in declared:
            declared[name].check(value, owner)
