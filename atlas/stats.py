"""Confidence intervals for a prediction's effect: what ``prediction.conclude(ci=...)`` is given.

Each function returns an ``Interval``: a ``(low, high)`` tuple that also carries what it was read from
(its bootstrap replicates, the unit it resampled, the same interval at other levels), from which
``one_sided_p`` reads the p-value a session's multiple-comparison adjustment needs. Choose the interval by
the claim's **unit** -- what the claim generalises over, the criterion's ``unit``:

* ``bootstrap_ci``: any statistic of samples of independent units (BCa, scipy.stats.bootstrap)
* ``domain_bootstrap_ci``: a statistic of per-domain perplexities, passages resampled within domains
* ``hierarchical_ci``: nested units, domains within territories, passages within domains
* ``pooled_hierarchical_ci``: ``hierarchical_ci`` over tables of passages (e.g. ``perplexity``)
* ``t_interval``: the mean of a handful of independent units (seeds, models)

``mean_difference`` is the territory contrast ``hierarchical_ci`` combines most often, ``spearman`` a rank
correlation. Every resampling interval takes ``n_resamples``; left out (None), it is the **active
profile's** ``bootstrap_resamples``: inside a prediction body the run's profile (``--atlas-profile``), in
``atlas calibrate`` its ``--resamples``, elsewhere the default profile (``atlas.using_profile`` sets it).

    >>> import numpy as np
    >>> from atlas.stats import bootstrap_ci, t_interval
    >>> t_interval([0.8, 1.1, 0.9, 1.2], unit="seeds")
    (0.7094..., 1.2905...)
    >>> ci = bootstrap_ci((np.arange(12.0),), np.mean, paired=False)  # the default profile's 2000 resamples
    >>> ci[0] < 5.5 < ci[1], len(ci.replicates)
    (True, 2000)

The statistics behind each choice (coverage, false "supported" rates in simulated nulls) are in the
docstrings of ``atlas._stats``; intervals over layers are in ``atlas.evidence``.
"""

from ._stats import (Interval, bootstrap_ci, domain_bootstrap_ci, hierarchical_ci, mean_difference, one_sided_p,
                     pooled_hierarchical_ci, spearman, t_interval)

__all__ = ["Interval", "bootstrap_ci", "domain_bootstrap_ci", "hierarchical_ci", "mean_difference", "one_sided_p",
           "pooled_hierarchical_ci", "spearman", "t_interval"]
