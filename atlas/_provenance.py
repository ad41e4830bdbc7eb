"""Provenance: what every record says about where it came from, without importing torch.

A stored run, a Lab training run and an imported sheet all record the same facts
about the code and settings that produced them:

* ``content_hash`` -- ``sha256:`` and the SHA-256 of a value's one canonical JSON text
  (``canonical_json``): a Lab recipe, an imported sheet, a criterion are named by it;
* ``settings_hash`` -- the key of a set of settings (the hex digits of their content hash);
  CISP's reuse rule, the session cache and the protocol log all key runs by it;
* ``package_versions`` -- the versions of the packages that decide the numbers;
* ``git_commit_of_atlas`` -- the commit of the Atlas checkout in use (``git``: one git query, None when it
  cannot be answered).

This module sits at the bottom of the package (with ``atlas._errors``): the store, the
Lab, CISP and the importer read it, and it reads none of them.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib import metadata
from pathlib import Path

from ._public import public

__all__ = ["canonical_json", "content_hash", "git", "git_commit_of_atlas", "package_versions", "settings_hash"]

#: the packages whose versions decide a measurement's numbers
_PACKAGES = ("atlas-landscape", "torch", "transformers", "great-expectations", "pandas", "numpy", "scipy", "sqlmodel")


def canonical_json(value) -> str:
    """The one JSON text of ``value`` that every content hash is taken over: keys sorted, no spaces
    (``,`` and ``:`` alone), text as it is (``é``, not ``\\u00e9``; the hash reads it as UTF-8), tuples as
    lists. NaN and ±inf are refused (``ValueError``): JSON has no such numbers, and a hash must not depend
    on how a writer spells one. Any other object (a date, a path) stands for its ``str()``.

        >>> canonical_json({"b": 1.5, "a": ["é", None, True]})
        '{"a":["é",null,true],"b":1.5}'
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)


def content_hash(value) -> str:
    """``sha256:`` and the hex SHA-256 of ``canonical_json(value)`` in UTF-8: equal for equal content,
    whatever the order its mappings were written in."""
    return "sha256:" + hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def settings_hash(settings: dict) -> str:
    """The key of ``settings`` (a stored run's ``settings_hash``): the hex digits of their content hash."""
    return content_hash(settings).removeprefix("sha256:")


def package_versions(packages: tuple[str, ...] = _PACKAGES, missing: str | None = None) -> dict[str, str]:
    """Name -> installed version of each of ``packages`` (by default those that decide the numbers); a package not
    installed is left out, or recorded as ``missing`` when that is given (``"not installed"``)."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if missing is not None:
                versions[name] = missing
    return versions


def git(*args: str, cwd: Path) -> str | None:
    """The output of ``git ARGS`` run in ``cwd``, stripped; None outside a checkout or without git."""
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit_of_atlas() -> str | None:
    """The commit of the Atlas checkout in use (None when installed from a wheel)."""
    return git("rev-parse", "HEAD", cwd=Path(__file__).parent) or None


public("atlas", package_versions)
