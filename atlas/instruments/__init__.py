"""The instrument registry: what Atlas can measure, each one module with one entry function.

An ``Instrument`` declares its entry function (``measure(lm, corpus, **settings)``
returning its primary table, or ``{table: DataFrame}`` when it measures several),
the summary tables derived from the primary table, their schemas, default
settings, and the Framework terms it measures. ``atlas._cisp.run_instrument`` is
the only caller: it handles isolation, validation, storage and reuse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from .ablation import layer_ablation, measure_ablation
from .coupling import layer_coupling, measure_coupling
from .gradient import measure_gradient
from .hessian import measure_hessian
from .interpolation import interpolation_barrier, measure_interpolation
from .perplexity import domain_perplexity, measure_perplexity

__all__ = ["INSTRUMENTS", "Instrument", "domain_perplexity", "interpolation_barrier", "layer_ablation",
           "layer_coupling", "measure_ablation", "measure_coupling", "measure_gradient", "measure_hessian",
           "measure_interpolation", "measure_perplexity"]


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
        Instrument("coupling", "1", measure_coupling, "coupling_passages",
                   defaults={"max_tokens": 128, "batch_size": 8},
                   summaries={"coupling": layer_coupling},
                   terms=("coupling",)),
        Instrument("ablation", "1", measure_ablation, "ablation",
                   defaults={"max_tokens": 2048, "batch_size": 8, "heads_per_pass": 4},
                   summaries={"ablation_layers": layer_ablation},
                   terms=("coupling", "viscosity")),
        Instrument("hessian", "1", measure_hessian, "hessian",
                   defaults={"backend": "atlas", "blocks": "model", "layers": "all", "top_k": 5, "lanczos_steps": 30,
                             "hutchinson_samples": 20, "slq_runs": 1, "max_tokens": 256, "tol": 1e-3},
                   terms=("viscosity", "coupling", "slick_sticky")),
        Instrument("gradient", "1", measure_gradient, "gradient",
                   defaults={"max_tokens_per_domain": 512, "batch_size": 8},
                   terms=("elevation", "steep_shallow", "probability", "hot_cold")),
        Instrument("interpolation", "1", measure_interpolation, "interpolation",
                   defaults={"other": "", "points": 11, "max_tokens": 512, "batch_size": 8},
                   summaries={"interpolation_barrier": interpolation_barrier},
                   terms=("basin_connectivity",)),
    ]
}
