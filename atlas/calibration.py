"""Calibration: how often a prediction's own analysis calls a false claim "supported", and how often a true one.

A prediction declares in its marker the **nulls** it must not call supported and an **alternative** at its
smallest effect of interest (``nulls={name: simulator}``, ``alternative=simulator``; a simulator is
``simulate(rng) -> evidence`` shaped as the instruments' tables). These functions run the prediction's own
test function on simulated evidence -- the same ``conclude`` and criterion as a run -- which is what
``atlas calibrate`` does and what a prediction's outcome tests use:

* ``discover(paths, ids)``: the ``Declared`` predictions (marker, test function, version) of prediction modules
* ``judge_evidence(declared, evidence)``: one ``Trial`` (outcome, effect, interval, reason) on given evidence
* ``calibrate(declared, reps=...)``: false "supported" rates under each null and power under the alternative

The methods (seeding, Monte-Carlo error) are in ``atlas._calibrate``'s docstring.
"""

from ._calibrate import Declared, Trial, calibrate, discover, judge_evidence

__all__ = ["Declared", "Trial", "calibrate", "discover", "judge_evidence"]
