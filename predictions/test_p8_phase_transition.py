"""P8 — phase transition: in grokking, held-out accuracy jumps while the training loss stays smooth.

Seed: framework-v13-global-geometry, Phase transitions: "phase transition at λ* where ∂Φ/∂λ jumps while
L(θ, λ) stays smooth"; grokking, "performance snaps ... after extended training at nearly constant loss"
(Power et al. 2022). A claim about the recipe (the Lab's modular-addition, p = 97, Nanda et al.'s set-up):
its seeds 0, 1, 2 are the sample, the unit the interval resamples.

Per seed, from ``phase_transitions_summary`` (Φ = held-out accuracy on 6586 held-out pairs; equal windows of
50 steps, 1/60 of the run), at the window where Φ rises most, four conditions, all declared here:
a jump -- the rise is >= 10 x the median |ΔΦ| per window, floored at Φ's resolution 1/6586 (quantised,
saturating accuracy has median 0); a jump of size -- the rise is >= 0.05 (330 pairs in 50 steps; a ramp
slower than that is no jump); it persists -- the median Φ after the window keeps >= half the rise (a glitch
falls back); the loss stays smooth -- the training loss changes by < 10% of its own level over the window
(scaled locally: its range over the run is the early drop's). One margin, in decades, positive iff all hold,
each condition counting up to one decade either way: m = min over the four of clip(log10(observed / bound), -1, 1).
Criterion, fixed before the data: the mean margin over seeds > 0, judged by its 95% Student-t interval over
seeds (2 degrees of freedom: 3 seeds have 10 distinct bootstrap resamples, too few for an interval). Seeds
agreeing that all hold -> supported; agreeing that one fails -> refuted; disagreeing -> inconclusive. Smallest
effect of interest: a factor 2 (log10 2 decades) on the tightest condition (a CI within +-log10 2: the seeds sit
at the bounds, no effect of interest). Calibration nulls
(``atlas.simulate.trajectories``): a ramp, a one-checkpoint glitch of +0.01, one held-out pair flipping, the
recovery from an Adam loss spike, a jump while the loss falls 70%; the alternative: jumps of 0.1 per window.
"""

import numpy as np
import pytest

from atlas import Criterion
from atlas.simulate.trajectories import Seeds, flip, glitch, grokking, ramp, spike
from atlas.stats import t_interval

RECIPE = "modular-addition"
SEEDS = tuple(f"lab:{RECIPE}@{seed}" for seed in (0, 1, 2))
SOURCE = "framework-v13-global-geometry: Phase transitions ('∂Φ/∂λ jumps while L(θ, λ) stays smooth'; grokking)"
JUMP, MIN_RISE, PERSIST, SMOOTH, FLOOR, SESOI = 10.0, 0.05, 0.5, 0.1, 1e-6, float(np.log10(2))
CRITERION = Criterion(
    statistic="mean over seeds of min(log10(jump ratio / 10), log10(rise / 0.05), log10(persistence / 0.5), "
              "log10(0.1 / local training-loss change)) at the largest rise of held-out accuracy",
    direction=">", threshold=0.0, ci="95% Student-t interval over seeds", unit="seeds", scope="across seeds",
    sesoi=SESOI, sample="every checkpoint of each seed's run; Φ = held-out accuracy on all held-out pairs",
    scale="log_ratio")
NULLS = {"linear ramp": ramp, "glitch +0.01": glitch, "one held-out pair flips": flip,
         "loss spike recovery": spike, "grokking while the loss falls 70%": grokking(0.1, loss_fall=0.7)}


def margin(row) -> float:
    """In decades: the tightest of the four conditions (each: observed against its bound, positive iff it holds)."""
    pairs = ((row["jump_ratio"], JUMP), (row["rise"], MIN_RISE), (row["persistence"], PERSIST),
             (SMOOTH, row["local_loss_change"]))
    return float(min(np.clip(np.log10(max(a, FLOOR) / max(b, FLOOR)), -1, 1) for a, b in pairs))


@pytest.mark.prediction(
    id="P8-grokking-phase-transition", form="named", model=SEEDS, source=SOURCE, needs=("phase_transitions",),
    claim="Trained on modular addition, a transformer's held-out accuracy jumps (by >= 0.05 in 50 steps, >= 10x "
          "its median change, and stays up) while its training loss changes by < 10% of its level, across seeds.",
    criterion=CRITERION, nulls={name: Seeds(shape, SEEDS, early=0.0) for name, shape in NULLS.items()},
    alternative=Seeds(grokking(MIN_RISE * 10**SESOI), SEEDS, name="jumps of 0.1 per window, loss smooth"))
def test_grokking_is_a_phase_transition(prediction):
    per_seed = {}
    for name in prediction.model_names:
        summary = prediction.evidence["phase_transitions", name]["phase_transitions_summary"]
        row = summary.set_index("order_parameter").loc["heldout_acc"]
        per_seed[name] = {"margin": margin(row), **{k: float(row[k]) for k in (
            "step", "rise", "jump_ratio", "persistence", "local_loss_change")}}
    margins = [s["margin"] for s in per_seed.values()]
    steps = [s["step"] for s in per_seed.values()]
    ci, steps_ci = t_interval(margins, unit="seeds"), t_interval(steps, unit="seeds")
    prediction.conclude(effect=float(np.mean(margins)), ci=ci, n=len(margins), evidence={
        "seeds": per_seed, "lambda_star": float(np.mean(steps)), "lambda_star_ci": list(steps_ci),
        "seeds_satisfying": int(sum(m > 0 for m in margins))})
