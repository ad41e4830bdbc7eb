"""The Framework's vocabulary as data: 18 terms in ``schema/vocabulary.yaml``.

The Framework names the terrain; the instruments measure it. Each term says which
registry instruments measure it (each of those lists the term in its ``terms``), or
that none does yet (``no instrument yet``), or that it is read by a Technician's
judgment (``technician``). The file is validated when it is loaded: a malformed
term raises ``VocabularyError`` naming the term and the field.

    >>> terms = vocabulary()
    >>> len(terms), terms["coupling"].poles
    (18, ('high', 'low'))
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from importlib.resources import files

import yaml

from ._errors import VocabularyError
from ._public import public
from ._yaml import load_yaml, problem_line

__all__ = ["GROUPS", "MARKERS", "Term", "registry_mismatches", "vocabulary"]

GROUPS = ("terrain", "navigator", "global_geometry")
VERSIONS = ("v12", "v13")
MARKERS = ("no instrument yet", "technician")
_FIELDS = ("id", "name", "group", "poles", "definition", "formula", "citations", "flags", "version", "source",
           "instruments")


@dataclass(frozen=True)
class Term:
    id: str
    name: str
    group: str  # terrain | navigator | global_geometry
    poles: tuple[str, ...]  # two, or one (elevation)
    definition: str
    formula: str | None  # None where the source text gives none (all terrain terms)
    citations: tuple[str, ...]
    flags: tuple[str, ...]
    version: str  # v12 | v13
    source: str  # the seed file it is transcribed from
    instruments: tuple[str, ...]  # registry instruments measuring it; empty when ``marker`` is set
    marker: str | None = None  # "no instrument yet" | "technician"
    name_reconstructed: bool = False  # the source text lost the name

    def as_dict(self) -> dict:
        """JSON form: ``instruments`` is the list of instruments, or the marker."""
        out = asdict(self)
        out["poles"], out["citations"], out["flags"] = list(self.poles), list(self.citations), list(self.flags)
        out["instruments"] = self.marker or list(self.instruments)
        del out["marker"]
        return out


def _strings(value, term: str, field: str, *, empty: bool = True) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise VocabularyError(f"vocabulary term {term!r}: field {field!r} must be a list of non-empty strings, "
                              f"not {value!r}")
    if not empty and not value:
        raise VocabularyError(f"vocabulary term {term!r}: field {field!r} must not be empty")
    return tuple(value)


def _term(raw, index: int) -> Term:
    if not isinstance(raw, dict):
        raise VocabularyError(f"vocabulary term #{index + 1}: expected a mapping, not {raw!r}")
    tid = raw.get("id")
    if not isinstance(tid, str) or not tid:
        raise VocabularyError(f"vocabulary term #{index + 1}: field 'id' is missing or empty")
    missing = [f for f in _FIELDS if f not in raw]
    unknown = sorted(set(raw) - set(_FIELDS) - {"name_reconstructed"})
    if missing or unknown:
        raise VocabularyError(f"vocabulary term {tid!r}: field(s) {missing or unknown} "
                              f"{'missing' if missing else 'unknown'}")
    for field in ("name", "definition", "source"):
        if not isinstance(raw[field], str) or not raw[field].strip():
            raise VocabularyError(f"vocabulary term {tid!r}: field {field!r} must be a non-empty string")
    if raw["group"] not in GROUPS:
        raise VocabularyError(f"vocabulary term {tid!r}: field 'group' is {raw['group']!r}, not one of {GROUPS}")
    if raw["version"] not in VERSIONS:
        raise VocabularyError(f"vocabulary term {tid!r}: field 'version' is {raw['version']!r}, not one of {VERSIONS}")
    poles = _strings(raw["poles"], tid, "poles", empty=False)
    if len(poles) not in (1, 2):
        raise VocabularyError(f"vocabulary term {tid!r}: field 'poles' must hold two poles (or one), not {poles}")
    if raw["formula"] is not None and (not isinstance(raw["formula"], str) or not raw["formula"].strip()):
        raise VocabularyError(f"vocabulary term {tid!r}: field 'formula' must be a string or null")
    if not isinstance(raw.get("name_reconstructed", False), bool):
        raise VocabularyError(f"vocabulary term {tid!r}: field 'name_reconstructed' must be true or false")
    instruments, marker = raw["instruments"], None
    if isinstance(instruments, str):
        if instruments not in MARKERS:
            raise VocabularyError(f"vocabulary term {tid!r}: field 'instruments' must be a list of instrument "
                                  f"names or one of {MARKERS}, not {instruments!r}")
        instruments, marker = (), instruments
    else:
        instruments = _strings(instruments, tid, "instruments", empty=False)
    return Term(tid, raw["name"], raw["group"], poles, " ".join(raw["definition"].split()), raw["formula"],
                _strings(raw["citations"], tid, "citations", empty=False), _strings(raw["flags"], tid, "flags"),
                raw["version"], raw["source"], instruments, marker, raw.get("name_reconstructed", False))


def load_vocabulary(text: str) -> dict[str, Term]:
    """Parse and validate a vocabulary file's text; terms by id, in file order."""
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        raise VocabularyError(f"vocabulary: {problem_line(exc)}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("terms"), list):
        raise VocabularyError("vocabulary: expected a mapping with a `terms` list")
    terms: dict[str, Term] = {}
    for i, item in enumerate(raw["terms"]):
        term = _term(item, i)
        if term.id in terms:
            raise VocabularyError(f"vocabulary term {term.id!r}: field 'id' is duplicated")
        terms[term.id] = term
    return terms


@functools.cache
def vocabulary() -> dict[str, Term]:
    """The Framework's terms by id (``schema/vocabulary.yaml``), loaded and validated once."""
    return load_vocabulary((files("atlas.schema") / "vocabulary.yaml").read_text(encoding="utf-8"))


@functools.cache
def groups() -> dict[str, dict]:
    """Group id -> {name, source, description} from the same file."""
    return load_yaml((files("atlas.schema") / "vocabulary.yaml").read_text(encoding="utf-8"))["groups"]


def registry_mismatches(instruments=None) -> list[str]:
    """Every disagreement between the vocabulary and the instrument registry (both directions) and the
    Technician fields of the schema; an empty list when they agree."""
    from ._schema import schema_for, table_names

    if instruments is None:
        from .instruments import INSTRUMENTS as instruments
    terms, problems = vocabulary(), []
    for term in terms.values():
        for name in term.instruments:
            if name not in instruments:
                problems.append(f"term {term.id!r} names instrument {name!r}, which is not in the registry")
            elif term.id not in instruments[name].terms:
                problems.append(f"term {term.id!r} names instrument {name!r}, whose `terms` omit it")
    for inst in instruments.values():
        for tid in inst.terms:
            if tid not in terms:
                problems.append(f"instrument {inst.name!r} names unknown term {tid!r}")
            elif inst.name not in terms[tid].instruments:
                problems.append(f"instrument {inst.name!r} measures term {tid!r}, which does not list it")
    judged = {}
    for table in table_names():
        for field, spec in schema_for(table).technician.items():
            for tid in spec.get("terms", ()):
                judged.setdefault(tid, []).append(f"{table}.{field}")
                if tid not in terms:
                    problems.append(f"Technician field {table}.{field} names unknown term {tid!r}")
    for term in terms.values():
        if term.marker == "technician" and term.id not in judged:
            problems.append(f"term {term.id!r} is marked `technician` but no Technician field names it")
    return problems


public("atlas", Term, vocabulary)
