"""The common steps of a prediction body: profiles over layers, perplexity by domain, and their intervals.

**Layers.** A claim about layers ("coupling rises with depth") is a claim about a *profile*, one number per
layer, estimated from sampled units (passages, or a Hessian estimate's probes). Build the profile from an
instrument's table, then judge it:

* ``mean_profile``: the per-layer mean of a column over passages (a ``LayerSample``)
* ``ablation_profile``: per layer, the mean perplexity change of ablating each of its heads
* ``fixed_profile``: a profile that is not sampled (the layer numbers themselves: depth)
* ``ParametricProfile``: a profile known by estimates and standard errors only
* ``layer_correlation``: Spearman's rho between two profiles; its interval is over **layers**
* ``layer_contrast``: a weighted sum of named layers of one model; its interval over passages

**Domains.** ``pooled_perplexity`` gives {domain: perplexity} of a table of passages, ``split_halves`` two
halves of each domain (choose on one, estimate on the other), ``untrained`` the passages none of the
prediction's models trained on, and ``judge_domain_pair`` concludes a model-pair prediction on a statistic of
the two models' per-domain perplexities.

Every interval here takes ``n_resamples`` like ``atlas.stats``: left out, the active profile's. A whole
prediction judging a rise with depth is in the ``atlas`` package's docstring; on a constructed table:

    >>> import pandas as pd
    >>> from atlas.evidence import fixed_profile, layer_correlation, mean_profile
    >>> table = pd.DataFrame({"passage_id": [p for p in "abcd" for _ in range(8)], "layer": list(range(8)) * 4,
    ...                       "coupling": [0.1 * layer + 0.01 * i for i in range(4) for layer in range(8)]})
    >>> result = layer_correlation(fixed_profile(range(8)), mean_profile(table, "coupling"))
    >>> result.rho, result.n_layers, result.ci.unit
    (1.0, 8, 'layers')

Why the interval of a layer correlation is over layers (Fisher's z at the effective number of independent
layers) and not over passages, with the false "supported" rates that decided it, is in ``atlas._evidence``.
"""

from ._evidence import (MIN_LAYERS, LayerCorrelation, LayerSample, ParametricProfile, ablation_profile,
                        effective_layers, fixed_profile, judge_domain_pair, layer_contrast, layer_correlation,
                        mean_profile, paired_perplexity, pooled_perplexity, rho_over_layers, split_halves, untrained)

__all__ = ["MIN_LAYERS", "LayerCorrelation", "LayerSample", "ParametricProfile", "ablation_profile",
           "effective_layers", "fixed_profile", "judge_domain_pair", "layer_contrast", "layer_correlation",
           "mean_profile", "paired_perplexity", "pooled_perplexity", "rho_over_layers", "split_halves", "untrained"]
