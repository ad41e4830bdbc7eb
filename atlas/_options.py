"""The settings of a run, declared once: the pytest plugin's options and the ``atlas`` command's are generated here.

Each ``Setting`` of ``SETTINGS`` is one row: its name, default, the values it takes,
its help; its environment variable is ``ATLAS_<NAME>``. The plugin offers every row as
``--atlas-NAME`` (``atlas.plugin``); the command offers a row as ``--NAME`` where it
applies (``atlas.cli``: ``--model``, ``--corpus``, ``--db``, ``--device``, ``--device-map``,
``--dtype``, ``--profile``, and ``atlas report --out`` for ``reports``). Neither writes a name, a
default, a choice or a help text of its own, so the two cannot drift apart:

    pytest predictions/ --atlas-device cuda:1       atlas measure perplexity --device cuda:1

A flag (``plan``) is given without a value (``--atlas-plan``, the plugin's alone: the command's
``atlas plan`` runs the plugin with it). A value is the option's, else the environment variable's, else the default, and it is
checked by ``Setting.check`` in both: a bad one is one usage error naming the option
and the values it takes, before any model is loaded. The default profile's bootstrap
resamples, the default of every summary's interval, are ``PROFILES[DEFAULT_PROFILE]``'s
(``atlas._profiles``). No torch and no pandas here: ``atlas --help`` reads this module.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from ._errors import SettingsError
from ._registry import check_model_name
from ._profiles import DEFAULT_PROFILE, PROFILES

__all__ = ["SETTINGS", "Setting", "model_pair"]


@dataclass(frozen=True)
class Setting:
    """One setting of a run. ``choices`` are the values it takes, as shown (``cuda:N`` for any GPU index);
    ``pattern`` the regular expression a value must match when that is not just one of ``choices``;
    ``opens`` a further check that reads or parses the value (raising a ``BadInput`` naming the problem)."""

    name: str
    default: str
    help: str
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    opens: Callable[[str], object] | None = None
    metavar: str | None = None  # how the value is shown in help when it has no choices
    flag: bool = False  # given without a value: ``--atlas-NAME`` sets it to ``yes``

    @property
    def env(self) -> str:
        """The environment variable read when the option is not given."""
        return "ATLAS_" + self.name.upper().replace("-", "_")

    @property
    def shown(self) -> str:
        """The value's placeholder in help: its choices, or its metavar."""
        return "|".join(self.choices) if self.choices else self.metavar or "TEXT"

    def value(self, given: str | None) -> str:
        """The option's value if given, else the environment variable's, else the default."""
        return given or os.environ.get(self.env) or self.default

    def check(self, value: str) -> str:
        """``value`` when the setting takes it; ``BadInput`` (one line: the problem and the values it takes)
        otherwise."""
        pattern = self.pattern or "|".join(map(re.escape, self.choices))
        if self.choices and not re.fullmatch(pattern, value):
            *others, last = self.choices
            raise SettingsError(f"unknown {self.name} {value!r}: use {', '.join(others)} or {last}")
        if self.opens is not None:
            self.opens(value)
        return value


def model_pair(value: str) -> tuple[str, str] | None:
    """``BASE,OTHER`` as a pair of model names (``None`` for the empty value), each checked for its form
    (``check_model_name``)."""
    if not value:
        return None
    names = [v.strip() for v in value.split(",")]
    if len(names) != 2 or not all(names):
        raise SettingsError(f"{value!r} is not two model names separated by a comma (BASE,OTHER)")
    return check_model_name(names[0]), check_model_name(names[1])


def _corpus(value: str) -> None:
    from ._corpus import load_corpus  # on use: the atlas command's help stays free of pandas

    load_corpus(value)


def _store_url(value: str) -> None:
    from ._store import check_store_url  # on use, as above

    check_store_url(value)


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("model", "smollm2-135m-instruct", metavar="NAME", opens=check_model_name,
            help="model measured: registry name (atlas models), local checkpoint directory, Lab run "
                 "(lab:RECIPE[@SEED]) or Hugging Face id"),
    Setting("corpus", "starter", metavar="FILE", opens=_corpus,
            help="JSONL corpus file ('starter': the bundled starter corpus)"),
    Setting("db", "sqlite:///atlas.db", metavar="URL", opens=_store_url,
            help="SQLAlchemy URL of the store, e.g. postgresql+psycopg://user:password@host:5432/atlas"),
    Setting("reports", "reports", metavar="DIR", help="directory for the HTML verdict report (index.html)"),
    Setting("device", "auto", choices=("auto", "cpu", "cuda", "cuda:N"), pattern=r"auto|cpu|cuda(:[0-9]+)?",
            help="where the model runs (auto: the first CUDA GPU if torch sees one, else the CPU)"),
    Setting("device-map", "none", choices=("none", "auto"),
            help="auto: split a model too large for one device across the GPUs and the CPU with accelerate's "
                 "device_map; the instruments that need no gradient of the weights run on it, the others refuse "
                 "(atlas plan says which; none: the whole model on --device)"),
    Setting("dtype", "auto", choices=("auto", "float32", "bfloat16", "float16"),
            help="the weights' dtype (auto: bfloat16 on CUDA, float32 on the CPU)"),
    Setting("profile", DEFAULT_PROFILE, choices=tuple(PROFILES),
            help="sample sizes and bootstrap resamples (quick: CPU, under 10 minutes; full: GPU, nightly)"),
    Setting("pair", "", metavar="BASE,OTHER", opens=model_pair,
            help="the model pair of the pairwise general forms (P2, P3)"),
    Setting("executor", "local", choices=("local", "ray"),
            help="where the instrument runs are measured: local (this process) or ray (one Ray task each on the "
                 "cluster at --atlas-ray-address, writing to a PostgreSQL store; atlas._cluster)"),
    Setting("ray-address", "", metavar="HOST:PORT",
            help="the Ray head of --atlas-executor ray (else RAY_ADDRESS)"),
    Setting("plan", "no", choices=("no", "yes"), flag=True,
            help="list the Lab runs to train and the instrument runs to measure or reuse, with estimated time and "
                 "memory, and run nothing (atlas._plan)"),
)}
