"""The report's figures as geometry: pure functions from stored tables to what an inline SVG draws.

A figure is one function registered with ``@figure(kind, *tables)``: given a run's tables
(``{name: DataFrame}``), what labels the run (``labels``: model, corpus, run id, settings) and the seed's
reference record, it returns a dict of coordinates and strings, or None when the tables hold nothing to
draw. ``templates/_figures.html.j2`` has one macro per ``kind`` that draws it, and ``draw`` adds the
frame every figure shares (title, caption, axes). Adding a figure for a new table is one function in a
module of this package (``_base`` holds what they share, ``_verdicts`` the forest plot and history,
``_instruments`` the first instruments' figures, ``_curvature`` the curvature and multi-task geometry
instruments', ``_lab`` the Lab's and the weight-space geometry instruments') and one macro there. Nothing here
writes markup: geometry is testable without a browser, and every label stays data for the autoescaping templates.
Every figure names its axes, their units, the model, the corpus and n.

Scales (``Scale``): linear; logarithmic for ratios, so that a factor of 2 up and down are the same
distance (Cleveland 1985, *The Elements of Graphing Data*, ch. 2); and the inverse hyperbolic sine
asinh(v / w) for quantities that change sign and span decades (differences, Hessian eigenvalues): linear
within about ±w, logarithmic beyond (Burbidge, Magee & Robb 1988, JASA 83:123). Ticks are round numbers
(1, 2, 2.5, 5 × 10^k), at least ``min_gap`` pixels apart.

The forest plot follows Lewis & Clarke (2001, BMJ 322:1479): one row per verdict, the effect as a dot,
its 95% CI as a bar, the criterion's threshold as a line with the side the criterion claims shaded, one axis
per scale the criteria declare (``Criterion.scale``); the heatmaps use ColorBrewer's diverging RdBu and
sequential Purples schemes (Harrower & Brewer 2003, Cartographic Journal 40:27).
"""

from ._base import (FIGURES, OUTCOME_COLOURS, Figure, Scale, asinh_scale, diverging, figure, figures_for,
                    linear_scale, log_scale, sequential)
from ._verdicts import claimed_side, forest, history, scale_kind, statistic_kind
from . import _instruments, _curvature, _lab  # noqa: F401  (registers the figures, in this order)

__all__ = ["FIGURES", "OUTCOME_COLOURS", "Figure", "Scale", "asinh_scale", "claimed_side", "diverging", "figure",
           "figures_for", "forest", "history", "linear_scale", "log_scale", "scale_kind", "sequential",
           "statistic_kind"]
