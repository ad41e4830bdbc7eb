"""Corpora: passages of text labelled by domain, read from JSON Lines.

One record per line::

    {"id": "poetry-1", "domain": "poetry", "text": "...", "source": "...", "license": "..."}

``id``, ``domain`` and ``text`` are required; ``source`` and ``license`` are
optional and any other field is kept but ignored. Domain ids are free-form.
A corpus is identified by a content hash over its (id, domain, text) triples,
stored with every run, so two files with the same passages are the same corpus.

What cannot be a corpus is refused as it is read, one ``CorpusError`` naming the file and the line,
before any model sees a token: a file over ``MAX_FILE_BYTES`` or a line over ``MAX_LINE_BYTES`` (checked
before the line is even decoded, so a 50 MB one-line passage is never tokenised); a line that is not UTF-8,
not JSON, nested too deeply for JSON's parser, or that names one key twice; text holding a lone surrogate
(``"\ud800"``: JSON can write it, UTF-8 cannot, and the corpus hash is taken over UTF-8); an id, domain or
text with nothing visible in it once whitespace and format characters (zero-width spaces, direction marks:
Unicode category Cf) are set aside; and an id seen before.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ._errors import CorpusError
from ._public import public

__all__ = ["Corpus", "Passage", "STARTER_CORPUS", "load_corpus"]

#: Original passages written for Atlas, a dozen for each of the seed's eight domains.
STARTER_CORPUS = Path(__file__).parent / "corpora" / "starter-v1.jsonl"

#: The seed's eight domains (measurements-gpt2-april-2026), in the seed's row order.
SEED_DOMAINS = {
    "technical_documentation": "Technical documentation",
    "vernacular_dialect": "Vernacular dialect",
    "tech_forum_discussion": "Reddit tech discussion",
    "non_western_cultural_context": "Non-Western cultural context",
    "literary_prose": "Literary prose",
    "poetry": "Poetry",
    "spanish": "Non-English text (Spanish)",
    "academic_abstract": "Academic abstract",
}

_REQUIRED = ("id", "domain", "text")

#: the largest line (one passage and its fields) a corpus may hold: beyond any model's context
MAX_LINE_BYTES = 1 << 20
#: the largest corpus file
MAX_FILE_BYTES = 256 << 20


def _unique_keys(where: str, pairs: list[tuple[str, object]]) -> dict:
    """A JSON object's pairs as a dict, refusing a key named twice (``json.loads`` keeps the last silently)."""
    seen = dict(pairs)
    if len(seen) < len(pairs):
        twice = next(k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i]))
        raise CorpusError(f"{where}: key {twice!r} appears twice in one record; keep one")
    return seen


def _visible(text: str) -> bool:
    """Whether ``text`` shows anything: a character that is neither whitespace nor a format character (Cf)."""
    return any(not c.isspace() and unicodedata.category(c) != "Cf" for c in text)


def _record(line: str, where: str) -> dict:
    """One line as a JSON object with each key once; a ``CorpusError`` naming what is wrong otherwise."""
    try:
        return json.loads(line, object_pairs_hook=functools.partial(_unique_keys, where))
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{where}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise CorpusError(f"{where}: nested too deeply to read as JSON; a passage is one flat object") from None


@dataclass(frozen=True)
class Passage:
    id: str
    domain: str
    text: str
    source: str | None = None
    license: str | None = None


@dataclass(frozen=True)
class Corpus:
    name: str
    passages: tuple[Passage, ...]

    @property
    def hash(self) -> str:
        """``sha256:`` and the SHA-256 of the ``[id, domain, text]`` triples as JSON in UTF-8, with the
        separators spaced (``", "``). The one content hash not taken over ``atlas._provenance.canonical_json``:
        it is older than that form, and every Lab recipe on a corpus holds it in the hash that names its
        checkpoints, so another form would orphan every corpus checkpoint already trained."""
        triples = json.dumps([[p.id, p.domain, p.text] for p in self.passages], ensure_ascii=False)
        return "sha256:" + hashlib.sha256(triples.encode("utf-8")).hexdigest()

    @property
    def domains(self) -> list[str]:
        """Domain ids in order of first appearance."""
        return list(dict.fromkeys(p.domain for p in self.passages))

    def round_robin(self) -> list[Passage]:
        """Passages with the domains taking turns: each domain's first, then each one's second, ...

        A token budget spent in this order spans every domain even when the file is sorted by domain."""
        by_domain = [[p for p in self.passages if p.domain == d] for d in self.domains]
        return [p for group in itertools.zip_longest(*by_domain) for p in group if p is not None]

    def sample(self, per_domain: int | None) -> Corpus:
        """The first ``per_domain`` passages of each domain (all of them for None)."""
        if per_domain is None:
            return self
        if per_domain < 1:
            raise CorpusError(f"corpus {self.name}: a sample needs at least 1 passage per domain, not {per_domain}")
        taken: dict[str, int] = {}
        kept = []
        for p in self.passages:
            if taken.get(p.domain, 0) < per_domain:
                taken[p.domain] = taken.get(p.domain, 0) + 1
                kept.append(p)
        suffix = f"[:{per_domain}/domain]"
        return Corpus(self.name + suffix, tuple(kept)) if len(kept) < len(self.passages) else self


def load_corpus(path: str | Path) -> Corpus:
    """Read and validate a JSONL corpus; ``"starter"`` names the bundled starter corpus.

    Raises ``CorpusError`` naming the line for: an empty file, a file or line too
    large, a line that is not UTF-8 or not a JSON object (or too deeply nested, or
    with a key twice), a missing or non-string required field, text with a lone
    surrogate, an id, domain or text with nothing visible, or an id seen before.
    """
    path = STARTER_CORPUS if str(path) == "starter" else Path(path)
    if path.is_dir():
        raise CorpusError(f"corpus {path}: a folder, not a file; give a JSON Lines file (one passage per line)")
    if not path.is_file():
        raise CorpusError(f"corpus {path}: no such file; give a JSON Lines file, or 'starter' for the bundled one")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise CorpusError(f"corpus {path}: {path.stat().st_size:,} bytes, over the limit of {MAX_FILE_BYTES:,}; "
                          "split it into several corpora")
    passages: list[Passage] = []
    first_seen: dict[str, int] = {}
    with path.open("rb") as f:
        for lineno, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), start=1):
            where = f"corpus {path}, line {lineno}"
            if len(raw) > MAX_LINE_BYTES:
                raise CorpusError(f"{where}: longer than {MAX_LINE_BYTES:,} bytes, more than any model's context; "
                                  "split long passages")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CorpusError(f"{where}: not valid UTF-8 ({exc.reason} at byte {exc.start}); re-save the file as UTF-8") from None
            if not line.strip():
                continue
            record = _record(line, where)
            if not isinstance(record, dict):
                raise CorpusError(f"{where}: expected a JSON object with fields {', '.join(_REQUIRED)}")
            for field in _REQUIRED:
                if field not in record:
                    raise CorpusError(f"{where}: missing field {field!r} (required: {', '.join(_REQUIRED)})")
                if not isinstance(record[field], str):
                    raise CorpusError(f"{where}: field {field!r} must be a string")
                try:
                    record[field].encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise CorpusError(f"{where}: field {field!r} holds a lone surrogate ({ascii(exc.object[exc.start])} "
                                      f"at character {exc.start}), which is not text; fix the \\u escape") from None
            if not _visible(record["text"]):
                raise CorpusError(f"{where}: passage {record['id']!r} has empty text")
            if not _visible(record["id"]) or not _visible(record["domain"]):
                raise CorpusError(f"{where}: id and domain must not be empty (nor only spaces or invisible "
                                  "characters such as a zero-width space)")
            if record["id"] in first_seen:
                raise CorpusError(f"{where}: duplicate id {record['id']!r} (first used on line {first_seen[record['id']]})")
            first_seen[record["id"]] = lineno
            passages.append(Passage(record["id"], record["domain"], record["text"],
                                    record.get("source"), record.get("license")))
    if not passages:
        raise CorpusError(f"corpus {path}: the file holds no passages")
    return Corpus(path.stem, tuple(passages))


public("atlas", Corpus, Passage, load_corpus)
