"""Database URLs: checked before use, and shown only with every secret masked.

A store's URL may carry a password in several places, and each is masked (``***``) wherever
Atlas shows the URL (terminal, report, errors, the pytest summary) -- through ``shown_url``
and ``redact`` alone:

- the user information, ``postgresql+psycopg://atlas:PASSWORD@host/db``, whatever the
  password holds (an unencoded ``@``, ``:`` or ``/`` included);
- secret-looking query parameters, ``?password=...``, ``sslpassword``, ``sslkey``, ``token``
  ... (any name holding pass, pwd, secret, token, key, cred or auth);
- libpq connection strings, ``host=h password=PASSWORD dbname=atlas`` (which SQLAlchemy
  cannot parse: the error names them masked);
- any text SQLAlchemy cannot parse.

The URL is masked as written, never re-rendered, and under every reading of it at once: what
SQLAlchemy takes for the password, the user information up to the last ``@``, and every secret
parameter's value (``_secret_spans``), so that an ambiguous URL is masked more, never less.
``check_store_url`` refuses a URL SQLAlchemy would misread (an unencoded ``@`` in the password
makes its end the host), telling to percent-encode it.

    >>> shown_url("postgresql+psycopg://atlas:p@ss@db.lab/atlas?sslpassword=x&application_name=atlas")
    'postgresql+psycopg://atlas:***@db.lab/atlas?sslpassword=***&application_name=atlas'
    >>> shown_url("host=db.lab password='s3 cret' dbname=atlas")
    'host=db.lab password=*** dbname=atlas'
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from sqlalchemy.engine.url import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from ._errors import StoreUrlError

__all__ = ["MASK", "check_store_url", "error_line", "redact", "shown_url"]

MASK = "***"
#: a parameter (query string or connection string) whose value is a secret: its name holds one of these
_SECRET_NAME = r"[\w.-]*(?:pass|pwd|secret|token|key|cred|auth)[\w.-]*"
#: ``name=value`` of a secret parameter; the value is quoted ('...') or runs to the next parameter or the end
_SECRET_PARAM = re.compile(
    rf"(?i)(?<![\w.-])({_SECRET_NAME})(\s*=\s*)('(?:[^'\\]|\\.)*'?|.*?(?=&[\w.-]+=|\s+[\w.-]+\s*=|[&\s]*\Z))",
    re.DOTALL)
#: a URL's scheme, up to ``://``
_SCHEME = re.compile(r"(?s)([A-Za-z][\w+.-]*://)(.*)")
#: how to install a backend's driver
_INSTALL = {"postgresql": "pip install 'psycopg[binary]' and write the URL as postgresql+psycopg://..."}


def _raw(url: str | URL) -> str:
    return url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url)


def _parsed(url: str | URL) -> URL | None:
    """``url`` as SQLAlchemy reads it, or None when it cannot, or when it reads part of the user information as
    the host or the database (an unencoded ``@`` in the password, a ``/`` in the user name), or part of the
    path and query as the password (an unencoded ``@`` in the query string of a URL without a password)."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except (ArgumentError, ValueError, TypeError):
        return None
    misread = ("@" in (parsed.host or "") or (parsed.host and "@" in (parsed.database or ""))
               or ("@" in (parsed.username or "") and re.search(r"[/?]", parsed.password or "")))
    return None if misread else parsed


def _secret_spans(raw: str) -> list[tuple[int, int]]:
    """Where ``raw`` holds a secret, under every reading of it: SQLAlchemy's (the password runs from the first
    ``:`` of the user information to the next ``@``), the user information up to the last ``@``, every secret
    parameter's value, and in text that is no URL any ``:...@``. A character any reading calls secret is one."""
    spans = [m.span(1) for m in re.finditer(r"^[\w+]+://[^:/]*:([^@]*)@", raw)]
    match = _SCHEME.match(raw)
    if match and "@" in match[2]:
        start, at = match.end(1), raw.rindex("@")
        colon = raw.find(":", start, at)
        if colon >= 0:
            spans.append((colon + 1, at))
    elif not match:
        spans += [(m.start() + 1, m.end() - 1) for m in re.finditer(r":[^\s@]*@", raw)]
    spans += [m.span(3) for m in _SECRET_PARAM.finditer(raw)]
    return sorted(s for s in spans if s[1] > s[0])


def shown_url(url: str | URL) -> str:
    """A database URL as it may be shown or stored: every secret masked (``***``), as written otherwise.

    >>> shown_url("postgresql+psycopg://atlas:s3cret@db.lab:5432/atlas")
    'postgresql+psycopg://atlas:***@db.lab:5432/atlas'
    >>> shown_url("sqlite:///atlas.db?password=s3cret")
    'sqlite:///atlas.db?password=***'
    """
    raw = _raw(url)
    return _masked(raw, _secret_spans(raw))


def _masked(text: str, spans) -> str:
    """``text`` with each run of characters inside any of ``spans`` replaced by one ``***``."""
    merged: list[list[int]] = []
    for start, stop in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    shown, end = [], 0
    for start, stop in merged:
        shown += [text[end:start], MASK]
        end = stop
    return "".join(shown) + text[end:]


def _secrets(url: str | URL) -> set[str]:
    """Every secret ``url`` holds, as written and decoded: its password and its secret parameters' values."""
    raw = _raw(url)
    found = {raw[a:b].strip(quotes) for a, b in _secret_spans(raw) for quotes in ("", "'")}
    parsed = _parsed(url)
    if parsed is not None:
        found |= {parsed.password or ""} | {
            str(v) for k, vs in parsed.query.items() if re.fullmatch(_SECRET_NAME, k, re.I)
            for v in (vs if isinstance(vs, tuple) else (vs,))}
    forms = {form for s in found for form in (s, unquote(s), unquote_plus(s), quote(s, safe=""), quote_plus(s))}
    return {s for s in forms if s and s != MASK}


def redact(text: str, url: str | URL) -> str:
    """``text`` (a driver's error, say) with every secret of ``url`` masked, wherever it appears."""
    return _masked(text, [m.span() for secret in _secrets(url) for m in re.finditer(re.escape(secret), text)])


def error_line(exc: BaseException, url: str | URL) -> str:
    """An error's first line (the driver's own, if any), with every secret of ``url`` masked."""
    line = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
    return redact(line, url)


def check_store_url(url: str) -> URL:
    """The parsed URL, if it can be used; ``StoreUrlError`` naming the problem (and the URL, masked) and the fix.

    Needs no connection (so it can run before a model is loaded): the URL parses, its password holds no
    unencoded ``@``, its backend's driver is installed, and an SQLite file's folder exists and is a folder.
    Reachability is checked by ``Store``."""
    shown = shown_url(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError, TypeError):
        raise StoreUrlError(f"{shown!r} is not a database URL: give an SQLAlchemy URL such as sqlite:///atlas.db "
                            "or postgresql+psycopg://user:password@host:5432/atlas") from None
    if _parsed(parsed) is None:
        raise StoreUrlError(f"{shown}: the user name or password holds an unencoded '@' (or '/'), read as part of "
                            "the host: percent-encode it (@ as %40, / as %2F, : as %3A)")
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise StoreUrlError(f"{shown}: no database backend {parsed.drivername!r}; use sqlite:///FILE or "
                            "postgresql+psycopg://user:password@host:5432/atlas") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        backend = parsed.get_backend_name()
        install = _INSTALL.get(backend, f"install the Python driver of {parsed.drivername}")
        raise StoreUrlError(f"{shown}: its driver {exc.name or parsed.get_driver_name()!r} is not installed; "
                            f"{install}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).expanduser().absolute().parent
        if not folder.is_dir():
            raise StoreUrlError(f"{shown}: cannot create the SQLite file there, {folder} is not a folder; "
                                "create the folder or choose another path")
    return parsed


def unmade_sqlite_file(url: URL) -> bool:
    """Whether ``url`` (parsed) names an SQLite file that does not exist yet: opening it would create the store."""
    return url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
        and not Path(url.database).expanduser().exists()
