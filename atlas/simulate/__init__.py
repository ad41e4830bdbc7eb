"""Simulators of evidence for ``atlas calibrate``: instrument tables drawn from declared null and alternative models.

A simulator is a callable ``simulate(rng: numpy.random.Generator) -> {instrument: {table: DataFrame}}`` (keys
``(instrument, model)`` for a prediction of several models), its tables shaped as the instruments' own
(``schema/``). A prediction names its simulators in its marker: ``nulls={name: simulator}`` (worlds in which its
claim is false, with the structure real data have) and ``alternative=simulator`` (its smallest effect of
interest); ``atlas calibrate`` judges them with the prediction's own analysis (``atlas._calibrate``).

One module per kind of evidence: ``atlas.simulate.layers`` (layer profiles over passages), ``.domains``
(passages nested in domains), ``.seeds`` (Lab runs over seeds), ``.trajectories`` (training curves).
"""
