"""Provenance: what every record says about where it came from, without importing torch.

A stored run, a Lab training run and an imported sheet all record the same facts
about the code and settings that produced them:

* ``settings_hash`` -- the key of a set of settings (SHA-256 over its canonical JSON);
  CISP's reuse rule, the session cache and the protocol log all key runs by it;
* ``package_versions`` -- the versions of the packages that decide the numbers;
* ``git_commit_of_atlas`` -- the commit of the Atlas checkout in use.

This module sits at the bottom of the package (with ``atlas._errors``): the store, the
Lab, CISP and the importer read it, and it reads none of them.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["git_commit_of_atlas", "package_versions", "settings_hash"]

#: the packages whose versions decide a measurement's numbers
_PACKAGES = ("atlas-landscape", "torch", "transformers", "great-expectations", "pandas", "numpy", "scipy", "sqlmodel")


def settings_hash(settings: dict) -> str:
    """The key of ``settings``: SHA-256 (hex) of their JSON with sorted keys (other objects as text)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def package_versions() -> dict[str, str]:
    """Name -> installed version of each package that decides the numbers (those installed)."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def git_commit_of_atlas() -> str | None:
    """The commit of the Atlas checkout in use (None when installed from a wheel)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
