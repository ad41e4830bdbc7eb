"""The instrument registry: every instrument declares itself next to its entry function.

    @instrument("coupling", version="2", measures=("coupling_passages",), terms=("coupling",),
                summaries={"coupling": layer_coupling})
    def measure_coupling(lm, corpus, *, max_tokens: int = 128, batch_size: int = 8,
                         progress: bool = True) -> dict[str, pd.DataFrame]:
        ...

* ``measures``: the tables the entry function returns, as ``{table: DataFrame}``, the
  primary table first; each has a schema ``schema/<table>.yaml`` whose ``instrument:``
  names this instrument (a test checks registry and schema against each other);
* ``summaries``: tables derived from the primary table alone, ``fn(primary, *,
  n_resamples, seed)``: CISP stores them as a derived run with its own key, so a new
  number of bootstrap resamples never repeats the measurement;
* settings and their defaults are the entry function's keyword-only parameters (read
  from its signature, never restated), except ``progress``; their annotations say what
  each takes (``atlas._bounds``: finite numbers, ``Annotated[int, at_least(1)]``, comma
  lists; a ``Literal[...]`` makes a setting's values a set, which the CLI offers as
  choices), and every call is checked against them: CISP before it resolves a run, the
  entry function (wrapped here) whenever it is called. The docstring's ``Settings:``
  section (``name: what it does``) is their help;
* ``lab``: an instrument that trains Lab runs of its own (``memory``) takes a keyword
  ``lab`` (not a setting): CISP passes the Lab resolver of the run's store and session
  (``atlas.lab.LabRuns``), so every training it asks for is stored as a run;
* ``models``: settings that name another model (a pairwise instrument such as
  ``interpolation``'s ``other``): the user gives a model name, CISP loads it, records
  its revision in the run and its reuse key, and the entry function receives the
  ``LoadedModel``;
* ``runs_split``: the instrument runs on a model ``--device-map auto`` split across devices (forward passes
  alone, or a gradient with respect to activations only: ``ablation``'s head gates); every other instrument is
  refused on a split model by CISP before it measures, with ``split_refusal`` (default ``SECOND_ORDER``) as
  the reason, and the plan says so;
* ``version``: bump it when an unchanged setting would produce other numbers.

``atlas._cisp.run_instrument`` is the only caller of an entry function.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from .._bounds import Declared, check_settings, declared_settings
from .._catalog import NOT_SETTINGS
from .._public import public

__all__ = ["INSTRUMENTS", "Instrument", "SECOND_ORDER", "instrument"]

#: why an instrument that does not run split is refused on a split model, unless it says otherwise
SECOND_ORDER = ("it differentiates the loss with respect to the parameters (gradients, Hessian-vector products), "
                "which needs them on one device, not split and offloaded")


@dataclass(frozen=True)
class Instrument:
    name: str
    version: str
    measure: Callable[..., dict[str, pd.DataFrame]]
    measures: tuple[str, ...]  # tables the entry function returns, primary first
    terms: tuple[str, ...] = ()  # Framework terms it measures (schema/vocabulary.yaml)
    #: derived tables: name -> fn(primary table, n_resamples=..., seed=...)
    summaries: dict[str, Callable[..., pd.DataFrame]] = field(default_factory=dict)
    models: tuple[str, ...] = ()  # settings naming another model, passed in as a LoadedModel
    #: every setting with its default: the entry function's keyword-only parameters, read at registration
    defaults: dict = field(default_factory=dict)
    #: settings whose values are a set: from their ``Literal[...]`` annotations
    choices: dict[str, tuple] = field(default_factory=dict)
    trains: bool = False  # the entry function takes ``lab``, the Lab resolver: it trains Lab runs of its own
    #: every setting as its signature declares it (``atlas._bounds``): what a value must be
    settings: dict[str, Declared] = field(default_factory=dict)
    runs_split: bool = False  # runs on a model split across devices (``--device-map auto``)
    split_refusal: str = SECOND_ORDER  # why it is refused on a split model, when it does not run split

    @property
    def table(self) -> str:
        """The primary table: the one summaries are derived from and ``--json`` prints as ``rows``."""
        return self.measures[0]

    @property
    def tables(self) -> tuple[str, ...]:
        return (*self.measures, *self.summaries)

    @property
    def summary(self) -> str:
        """The entry function's first docstring line (the CLI's help)."""
        doc = (self.measure.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""


INSTRUMENTS: dict[str, Instrument] = {}


def instrument(name: str, *, version: str, measures: tuple[str, ...], terms: tuple[str, ...] = (),
               summaries: dict[str, Callable[..., pd.DataFrame]] | None = None, models: tuple[str, ...] = (),
               runs_split: bool = False, split_refusal: str = SECOND_ORDER):
    """Register the decorated entry function as instrument ``name`` (see the module docstring)."""

    def register(fn: Callable) -> Callable:
        if name in INSTRUMENTS:
            raise ValueError(f"instrument {name!r} is registered twice ({INSTRUMENTS[name].measure.__module__} "
                             f"and {fn.__module__})")
        params = inspect.signature(fn).parameters
        missing = [m for m in models if m not in params or params[m].kind is not inspect.Parameter.KEYWORD_ONLY]
        if missing or not measures:
            raise ValueError(f"instrument {name!r}: models {missing} must be keyword-only parameters of "
                             f"{fn.__name__}, and measures must name at least one table")
        declared = declared_settings(fn, NOT_SETTINGS)

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            check_settings(declared, kwargs, f"instrument {name!r}")
            return fn(*args, **kwargs)

        entry = Instrument(name, version, checked, tuple(measures), tuple(terms), dict(summaries or {}),
                           tuple(models), {k: s.default for k, s in declared.items()},
                           {k: s.choices for k, s in declared.items() if s.choices is not None},
                           trains="lab" in params, settings=declared, runs_split=runs_split,
                           split_refusal=split_refusal)
        INSTRUMENTS[name] = entry
        checked.instrument = entry
        return checked

    return register


public("atlas.instruments", Instrument, instrument)
