"""The instrument registry: what Atlas can measure, each one module with one entry function.

An ``Instrument`` declares its entry function (``measure(lm, corpus, **settings)``
returning its primary table), the summary tables derived from that table, their
schemas, and default settings. ``atlas._cisp.run_instrument`` is the only caller:
it handles isolation, validation, storage and reuse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from .perplexity import domain_perplexity, measure_perplexity

__all__ = ["INSTRUMENTS", "Instrument", "measure_perplexity", "domain_perplexity"]


@dataclass(frozen=True)
class Instrument:
    name: str
    version: str  # bump when the numbers an unchanged setting produces would change
    measure: Callable[..., pd.DataFrame]
    table: str  # schema of the primary table
    defaults: dict = field(default_factory=dict)
    #: derived tables: name -> fn(primary table, n_resamples=..., seed=...)
    summaries: dict[str, Callable[..., pd.DataFrame]] = field(default_factory=dict)
    terms: tuple[str, ...] = ()  # Framework terms it measures (schema/vocabulary.yaml)

    @property
    def tables(self) -> tuple[str, ...]:
        return (self.table, *self.summaries)


INSTRUMENTS: dict[str, Instrument] = {
    i.name: i
    for i in [
        Instrument("perplexity", "1", measure_perplexity, "perplexity",
                   defaults={"bos_policy": "prepend", "batch_size": 8},
                   summaries={"perplexity_domains": domain_perplexity},
                   terms=("perplexity", "elevation")),
    ]
}
